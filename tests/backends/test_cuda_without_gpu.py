"""GPU_CUDA without a GPU: fallbacks and their messages, and the backend's wiring on a simulated CuPy.

These need no GPU. Most situations are *simulated* by replacing ``cupy`` in ``sys.modules``
(a missing CuPy, an import that raises, a CuPy that sees no device or no driver, a module the
driver refuses, no CUDA compiler), because the machines that run the test suite usually have no GPU at all; the
first tests use whatever this machine really has. The last section runs the real backend
on a simulated two-device CuPy whose kernels are the generated CUDA built for the host
(``tests/cuda_emulation.py``): ids, constants, launches, ``set_gpu_id`` and device checks
(the constants' gradient and the features-last layout: ``test_cuda_training.py``).
"""
from __future__ import annotations

import importlib.abc
import re
import subprocess
import sys
import textwrap
import types
import warnings

import numpy as np
import pytest

from heterosymnn import (
    BackendUnavailableError, HeteroSymNNError, InvalidDeviceIDError, PerformanceWarning, SymbolicJITCompiler,
)
import cuda_emulation
from corpus import ACTIVATIONS, LOSSES
from counting import count_front_end_calls
from heterosymnn.backends import cuda
from heterosymnn.jit import selection


def _gpu_count() -> int:
    try:
        import cupy

        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:
        return 0


no_gpu_here = pytest.mark.skipif(_gpu_count() > 0, reason="this machine has a GPU, so GPU_CUDA does not fall back")
CONFIGS = ["relu", ("a*sin(num)", {"a": 2.0})]


def _real_reason() -> str:
    class Layer:  # build must fail before it needs the layer
        plan = structures = None
    with pytest.raises(BackendUnavailableError) as info:
        cuda.build(Layer(), "float32", np.zeros((2, 1)), 0)
    return str(info.value)


def _perf_messages(record) -> list:
    return [str(w.message) for w in record if issubclass(w.category, PerformanceWarning)]


# -- this machine, as it is ------------------------------------------------------------------------
@no_gpu_here
def test_gpu_cuda_falls_back_to_cpu_jit_with_the_cause():
    from heterosymnn.toolchains import find_toolchain

    try:
        find_toolchain()
    except HeteroSymNNError:
        pytest.skip("no C toolchain, so CPU_JIT itself falls back")
    reason = _real_reason()
    with pytest.warns(PerformanceWarning) as record:
        comp = SymbolicJITCompiler(CONFIGS, "GPU_CUDA")
    assert comp.calculation_method == "CPU_JIT"
    messages = _perf_messages(record)
    assert any(m.startswith("GPU_CUDA is not available, falling back to CPU_JIT") and reason in m
               for m in messages), messages
    z = np.array([[-1.0, 2.0], [0.5, 1.0]], dtype=np.float32)
    np.testing.assert_allclose(comp.forward_kernel(z), [[0, 2], [2 * np.sin(0.5), 2 * np.sin(1.0)]], rtol=1e-6)


@no_gpu_here
def test_strict_raises_backend_unavailable():
    with pytest.raises(BackendUnavailableError, match="heterosymnn\\[gpu\\]|CUDA"):
        SymbolicJITCompiler(CONFIGS, "GPU_CUDA", strict=True)


@no_gpu_here
def test_auto_without_a_gpu_is_quiet_about_it(monkeypatch):
    monkeypatch.setitem(selection.BUILDERS, "CPU_JIT", "heterosymnn.backends.python:build")
    with warnings.catch_warnings():
        warnings.simplefilter("error", PerformanceWarning)
        assert SymbolicJITCompiler(CONFIGS).calculation_method == "CPU_PYTHON"  # the patched CPU_JIT


# -- simulated CuPy situations ------------------------------------------------------------------
class _FakeRuntime:
    def __init__(self, count=0, error=None, driver=12040, runtime=12080):
        self.count, self.error, self.driver, self.runtime = count, error, driver, runtime

    def getDeviceCount(self):
        if self.error is not None:
            raise self.error
        return self.count

    def driverGetVersion(self):
        return self.driver

    def runtimeGetVersion(self):
        return self.runtime

    def getDeviceProperties(self, device):
        return {"multiProcessorCount": 4}


class _FakeDevice:
    compute_capability = "80"

    def __init__(self, device_id):
        self.id = device_id

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _fake_cupy(**runtime) -> types.ModuleType:
    """A stand-in for CuPy: only what the backend touches before it would launch anything."""
    cupy = types.ModuleType("cupy")
    cupy.cuda = types.SimpleNamespace(runtime=_FakeRuntime(**runtime), Device=_FakeDevice)
    cupy.asarray = np.asarray
    return cupy


@pytest.fixture
def python_cpu(monkeypatch):
    """CPU_JIT replaced by NumPy, so these tests do not depend on a C compiler."""
    monkeypatch.setitem(selection.BUILDERS, "CPU_JIT", "heterosymnn.backends.python:build")


def _falls_back_with(match: str) -> None:
    with pytest.warns(PerformanceWarning) as record:
        comp = SymbolicJITCompiler(CONFIGS, "GPU_CUDA")
    assert comp.calculation_method == "CPU_PYTHON"  # what the patched CPU_JIT builds
    messages = _perf_messages(record)
    assert any(m.startswith("GPU_CUDA is not available, falling back to CPU_JIT") and match in m for m in messages), messages
    with pytest.raises(BackendUnavailableError, match=re.escape(match)):
        SymbolicJITCompiler(CONFIGS, "GPU_CUDA", strict=True)


def test_simulated_missing_cupy(monkeypatch, python_cpu):
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` raises ImportError
    _falls_back_with("CuPy is not installed")
    _falls_back_with("pip install heterosymnn[gpu]")


class _BrokenCupyFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "cupy" or name.startswith("cupy."):
            raise OSError("libcudart.so.12: cannot open shared object file (simulated)")
        return None


@pytest.fixture
def broken_cupy(monkeypatch):
    for name in [n for n in sys.modules if n == "cupy" or n.startswith("cupy.")]:
        monkeypatch.delitem(sys.modules, name)
    finder = _BrokenCupyFinder()
    monkeypatch.setattr(sys, "meta_path", [finder, *sys.meta_path])


def test_simulated_cupy_import_raising(broken_cupy, python_cpu):
    _falls_back_with("CuPy is installed but failed to import (OSError: libcudart.so.12")


def test_simulated_cupy_without_a_device(monkeypatch, python_cpu):
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(count=0))
    _falls_back_with("no CUDA device found")


class CUDARuntimeError(RuntimeError):
    pass


def test_simulated_old_driver_says_to_update_it(monkeypatch, python_cpu):
    error = CUDARuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient")
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(error=error, driver=11040, runtime=12080))
    _falls_back_with("cudaErrorInsufficientDriver")
    _falls_back_with("the NVIDIA driver supports CUDA 11.4 but CuPy was built for CUDA 12.8: update the driver")


def test_simulated_missing_driver(monkeypatch, python_cpu):
    error = CUDARuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(error=error, driver=0))
    _falls_back_with("no NVIDIA driver is installed")


def test_simulated_device_id_out_of_range(monkeypatch, python_cpu):
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(count=1))
    with pytest.raises(InvalidDeviceIDError, match=r"^device 3 does not exist; this machine has 1 CUDA device \(0\)$"):
        cuda.build(None, "float32", np.zeros((1, 1)), device_id=3)
    with pytest.warns(PerformanceWarning, match="device 3 does not exist"):
        comp = SymbolicJITCompiler(CONFIGS, "GPU_CUDA", device_id=3)
    assert comp.calculation_method == "CPU_PYTHON"
    with pytest.raises(HeteroSymNNError, match="device 3 does not exist"):
        SymbolicJITCompiler(CONFIGS, "GPU_CUDA", device_id=3, strict=True)


def test_device_list_in_the_message():
    with pytest.raises(InvalidDeviceIDError, match=r"device 5 does not exist; this machine has 2 CUDA devices \(0, 1\)"):
        cuda.check_device_id(5, 2)
    assert cuda.check_device_id(1, 2) == 1


def test_simulated_module_load_failure(monkeypatch, python_cpu, fresh_cache_dir):
    from heterosymnn.toolchains.cuda_compiler import detect_cuda_compilers

    if not any(status.usable for status in detect_cuda_compilers()):
        pytest.skip("no CUDA compiler to build the cubin whose loading fails")

    class CUDADriverError(Exception):
        pass

    class RawModule:  # the cubin is real (built by our compiler); the driver refuses it
        def __init__(self, code=None, *, path=None, options=()):
            assert code is None and path.endswith(".cubin")

        def get_function(self, name):
            raise CUDADriverError("CUDA_ERROR_NO_BINARY_FOR_GPU: no kernel image is available (simulated)")

    cupy = _fake_cupy(count=1)
    cupy.RawModule = RawModule
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    _falls_back_with("could not be compiled or loaded on device 0 (CUDADriverError: CUDA_ERROR_NO_BINARY_FOR_GPU")


def test_no_cuda_compiler_falls_back_naming_both(monkeypatch, python_cpu):
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(count=1))
    monkeypatch.setenv("HETEROSYMNN_CUDA_COMPILER", "nvcc")
    monkeypatch.setenv("HETEROSYMNN_NVCC", "no-such-nvcc-here")
    from heterosymnn.toolchains import cuda_compiler

    cuda_compiler.clear_caches()
    try:
        _falls_back_with("HETEROSYMNN_NVCC='no-such-nvcc-here' is not an executable nvcc")
    finally:
        cuda_compiler.clear_caches()


# -- importing never depends on CuPy -------------------------------------------------------------------
@pytest.mark.parametrize("setup", [
    "sys.modules['cupy'] = None",
    textwrap.dedent("""
        import importlib.abc
        class Broken(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] == 'cupy':
                    raise RuntimeError('simulated broken CuPy')
        sys.meta_path.insert(0, Broken())
    """),
], ids=["missing", "broken"])
def test_import_never_fails_or_prints_because_of_cupy(setup):
    code = "import sys\n" + setup + "\nimport heterosymnn, heterosymnn.backends.cuda, heterosymnn.jit.selection\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""


# -- the backend on a simulated two-device CuPy -----------------------------------------------------
@pytest.fixture
def sim(monkeypatch, tmp_path):
    return cuda_emulation.simulated_cupy(monkeypatch, tmp_path)


ACT = [c for c, _, _ in ACTIVATIONS]
RTOL = {"float32": 3e-5, "float64": 1e-11}


def _close(got, want, dtype, what):
    got, want = np.asarray(got).reshape(want.shape[0], -1), want.reshape(want.shape[0], -1)
    for row in range(want.shape[0]):
        finite = np.isfinite(want[row]) & (np.abs(want[row]) < 1e6)
        scale = max(1.0, float(np.max(np.abs(want[row][finite]), initial=0.0)))
        np.testing.assert_allclose(got[row], want[row], rtol=RTOL[dtype], atol=RTOL[dtype] * scale,
                                   equal_nan=True, err_msg=f"{what}, row {row}")


def _inputs(rows, cols, dtype, seed=0):
    z = np.random.default_rng(seed).normal(0, 3, (rows, cols))
    special = [0.0, -0.0, np.nan, np.inf, -np.inf, 1.0, -1.0, 0.5, 30.0, -30.0]
    z[:, :min(cols, len(special))] = special[:cols]
    return z.astype(dtype)


def _simulated_pair(configs, dtype, mode="activation"):
    gpu = SymbolicJITCompiler(configs, "GPU_CUDA", mode=mode, dtype=dtype, strict=True)
    assert gpu.calculation_method == "GPU_CUDA"
    return gpu, SymbolicJITCompiler(configs, "CPU_PYTHON", mode=mode, dtype=dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n_nodes, batch", [(len(ACT), 40), (1024, 1), (4, 3000), (5, 31)])
def test_simulated_gpu_layer_matches_cpu_python(sim, n_nodes, batch, dtype):
    configs = [ACT[i % len(ACT)] for i in range(n_nodes)]
    gpu, cpu = _simulated_pair(configs, dtype)
    z = _inputs(n_nodes, batch, dtype)
    grad = np.random.default_rng(1).normal(size=z.shape).astype(dtype)
    _close(gpu.forward_kernel(sim.module.asarray(z)), cpu.forward_kernel(z), dtype, "forward")
    _close(gpu.backward_kernel(sim.module.asarray(z), sim.module.asarray(grad)),
           cpu.backward_kernel(z, grad), dtype, "backward")


def test_simulated_gpu_losses_match_cpu_python(sim):
    configs = [c for c, _, _ in LOSSES]
    gpu, cpu = _simulated_pair(configs, "float64", mode="loss")
    y_pred = _inputs(len(configs), 50, "float64")
    y_true = np.random.default_rng(2).uniform(0, 1, y_pred.shape)
    for name in ("forward_kernel", "backward_kernel"):
        got = getattr(gpu, name)(sim.module.asarray(y_pred), sim.module.asarray(y_true))
        _close(got, getattr(cpu, name)(y_pred, y_true), "float64", name)
    single, reference = _simulated_pair(["huber"], "float64", mode="loss")
    flat = y_pred.reshape(-1)
    _close(single.forward_kernel(sim.module.asarray(flat), sim.module.asarray(flat[::-1].copy()))[None],
           reference.forward_kernel(flat, flat[::-1].copy())[None], "float64", "element-wise loss")


def test_simulated_launches_are_planned_once_per_shape(sim):
    gpu, _ = _simulated_pair(["relu", "sin"], "float32")
    z = sim.module.asarray(_inputs(2, 64, "float32"))
    out = sim.module.empty((2, 64), np.float32)
    for _ in range(3):
        assert gpu.forward_kernel(z, out=out) is out
        gpu.backward_kernel(z, z.copy())
    assert len(gpu._kernels._state.launches) == 2  # (forward, 64) and (backward, 64)


def test_simulated_numpy_input_is_a_type_error(sim):
    gpu, _ = _simulated_pair(["relu", "sin"], "float32")
    with pytest.raises(TypeError, match="cupy.asarray"):
        gpu.forward_kernel(np.zeros((2, 3), np.float32))


def test_simulated_set_gpu_id_moves_only_device_state(sim, monkeypatch):
    configs = [("k*num", {"k": 2.0}), "sin"]
    cpu = SymbolicJITCompiler(configs, "CPU_PYTHON", dtype="float64")
    calls = count_front_end_calls(monkeypatch)
    gpu = SymbolicJITCompiler(configs, "GPU_CUDA", dtype="float64", strict=True)
    assert calls == {"analyze": 1, "render": 1}  # the counters see the build
    assert {device for device, _ in sim.loads} == {0} and len(sim.loads) == len(gpu._kernels._module.kernels)

    gpu.set_constants(0, k=5.0)
    cpu.set_constants(0, k=5.0)
    gpu.set_gpu_id(1)
    assert gpu.device_id == 1 and calls == {"analyze": 1, "render": 1}
    assert sorted(name for device, name in sim.loads if device == 1) == sorted(gpu._kernels._module.kernels.values())
    z = _inputs(2, 40, "float64")
    with pytest.raises(ValueError, match="device 0, but this compiler runs on device 1"):
        gpu.forward_kernel(sim.module.asarray(z))  # made on the current device, 0
    with sim.module.cuda.Device(1):
        _close(gpu.forward_kernel(sim.module.asarray(z)), cpu.forward_kernel(z), "float64", "on device 1")
    with pytest.raises(InvalidDeviceIDError, match=r"device 2 does not exist; this machine has 2 CUDA devices \(0, 1\)"):
        gpu.set_gpu_id(2)
    assert gpu.device_id == 1

    gpu.set_constants(0, k=-1.0)  # while on device 1
    cpu.set_constants(0, k=-1.0)
    loads = len(sim.loads)
    gpu.set_gpu_id(0)
    assert len(sim.loads) == loads, "device 0's module is kept, not loaded again"
    _close(gpu.forward_kernel(sim.module.asarray(z)), cpu.forward_kernel(z), "float64", "back on device 0")
    assert calls == {"analyze": 1, "render": 1}
