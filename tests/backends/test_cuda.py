"""GPU_CUDA on a real GPU: every corpus formula against CPU_PYTHON, shapes, set_gpu_id, constants,
``out=``, argument errors, and proof that moving devices redoes nothing symbolic.

Every test here launches CUDA kernels: the module is marked ``gpu`` and skipped unless CuPy
imports and sees at least one device. What can be checked without a GPU (fallbacks, NVRTC
compilation, the kernels' semantics through a host build) lives in ``test_cuda_without_gpu.py`` and
``tests/codegen/test_cuda_compile.py``.
"""
from __future__ import annotations

import numpy as np
import pytest

from corpus import ACTIVATIONS, LOSSES
from counting import count_front_end_calls


def _gpu_count() -> int:
    try:
        import cupy

        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # no CuPy, a broken CuPy, no driver: no GPU for these tests
        return 0


GPU_COUNT = _gpu_count()
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(GPU_COUNT == 0, reason="needs CuPy and at least one CUDA device")]

from heterosymnn import InvalidDeviceIDError, SymbolicJITCompiler  # noqa: E402

DTYPES = ("float32", "float64")
ACT_CONFIGS = [c for c, _, _ in ACTIVATIONS]
LOSS_CONFIGS = [c for c, _, _ in LOSSES]
# GPU math functions are within a few ulp of the CPU's (CUDA math API documentation), so the
# comparison is NumPy's float32/float64 evaluation of the same expression up to a few ulp, with
# an absolute part relative to each row's scale for cancellations (1 - tanh(x)**2).
RTOL = {"float32": 3e-5, "float64": 1e-11}
ATOL = {"float32": 3e-5, "float64": 1e-12}
SPECIAL = [0.0, -0.0, np.nan, np.inf, -np.inf, 1.0, -1.0, 0.5, -0.5, 2.0, -3.0, 10.0, -10.0, 30.0, -30.0,
           1e5, -1e5, 1e-5, -1e-5]


@pytest.fixture
def cp():
    import cupy

    return cupy


def _inputs(n_rows: int, cols: int, dtype: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 3, (n_rows, cols))
    z[:, :len(SPECIAL)] = SPECIAL[:cols]
    return z.astype(dtype)


def _assert_rows_close(got: np.ndarray, want: np.ndarray, dtype: str, what: str) -> None:
    got, want = got.reshape(want.shape[0], -1), want.reshape(want.shape[0], -1)
    for row in range(want.shape[0]):
        finite = np.isfinite(want[row]) & (np.abs(want[row]) < 1e6)
        scale = max(1.0, float(np.max(np.abs(want[row][finite]), initial=0.0)))
        np.testing.assert_allclose(got[row], want[row], rtol=RTOL[dtype], atol=ATOL[dtype] * scale,
                                   equal_nan=True, err_msg=f"{what}, row {row}")


def _pair(configs, dtype, mode="activation"):
    gpu = SymbolicJITCompiler(configs, "GPU_CUDA", mode=mode, dtype=dtype, strict=True)
    cpu = SymbolicJITCompiler(configs, "CPU_PYTHON", mode=mode, dtype=dtype)
    assert gpu.calculation_method == "GPU_CUDA"
    return gpu, cpu


def _check_activation(cp, gpu, cpu, z: np.ndarray, dtype: str, what: str) -> None:
    grad = np.random.default_rng(1).normal(size=z.shape).astype(dtype)
    grad.reshape(-1)[:3] = [np.nan, np.inf, 0.0]
    out = gpu.forward_kernel(cp.asarray(z))
    assert isinstance(out, cp.ndarray) and out.dtype == np.dtype(dtype) and out.shape == z.shape
    _assert_rows_close(cp.asnumpy(out), cpu.forward_kernel(z), dtype, f"{what} forward")
    back = gpu.backward_kernel(cp.asarray(z), cp.asarray(grad))
    _assert_rows_close(cp.asnumpy(back), cpu.backward_kernel(z, grad), dtype, f"{what} backward")


# -- the corpus ------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_activation_corpus_matches_cpu_python(cp, dtype):
    gpu, cpu = _pair(ACT_CONFIGS, dtype)
    _check_activation(cp, gpu, cpu, _inputs(len(ACT_CONFIGS), 300, dtype), dtype, "corpus")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", LOSS_CONFIGS, ids=str)
def test_each_loss_matches_cpu_python(cp, config, dtype):
    gpu, cpu = _pair([config], dtype, mode="loss")
    rng = np.random.default_rng(3)
    y_pred = np.concatenate([SPECIAL, rng.uniform(-0.5, 1.5, 300)]).astype(dtype)
    y_true = np.concatenate([SPECIAL[::-1], rng.choice([0.0, 1.0, 0.3], 300)]).astype(dtype)
    for kernel, reference, name in ((gpu.forward_kernel, cpu.forward_kernel, "loss"),
                                    (gpu.backward_kernel, cpu.backward_kernel, "dloss")):
        got = cp.asnumpy(kernel(cp.asarray(y_pred), cp.asarray(y_true)))
        _assert_rows_close(got[None], reference(y_pred, y_true)[None], dtype, f"{config} {name}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_per_output_losses_on_rows(cp, dtype):
    gpu, cpu = _pair(LOSS_CONFIGS, dtype, mode="loss")
    y_pred = _inputs(len(LOSS_CONFIGS), 200, dtype)
    y_true = np.random.default_rng(4).uniform(0, 1, y_pred.shape).astype(dtype)
    for kernel, reference in ((gpu.forward_kernel, cpu.forward_kernel), (gpu.backward_kernel, cpu.backward_kernel)):
        got = cp.asnumpy(kernel(cp.asarray(y_pred), cp.asarray(y_true)))
        _assert_rows_close(got, reference(y_pred, y_true), dtype, "per-output loss")


# -- shapes: both thread mappings ---------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_nodes, batch", [(1024, 1), (4, 100_000), (33, 31), (3, 32), (70_000, 2)])
def test_shapes_match_cpu_python(cp, n_nodes, batch, dtype):
    configs = [ACT_CONFIGS[i % len(ACT_CONFIGS)] for i in range(n_nodes)]
    gpu, cpu = _pair(configs, dtype)
    _check_activation(cp, gpu, cpu, _inputs(n_nodes, batch, dtype), dtype, f"({n_nodes}, {batch})")


def test_one_dimensional_and_non_contiguous_inputs(cp):
    gpu, cpu = _pair(ACT_CONFIGS, "float64")
    z = _inputs(len(ACT_CONFIGS), 64, "float64")
    _assert_rows_close(cp.asnumpy(gpu.forward_kernel(cp.asarray(z[:, 0]))), cpu.forward_kernel(z[:, 0]).reshape(-1, 1),
                       "float64", "1-D")
    strided = cp.asarray(z)[:, ::2]
    _assert_rows_close(cp.asnumpy(gpu.forward_kernel(strided)), cpu.forward_kernel(z[:, ::2]), "float64", "strided")


# -- out=, errors ---------------------------------------------------------------------------------------
def test_out_is_written_and_returned(cp):
    gpu, cpu = _pair(["relu", "sin", ("a*tanh(num)", {"a": 2.0})], "float32")
    z = _inputs(3, 100, "float32")
    out = cp.empty((3, 100), dtype=cp.float32)
    assert gpu.forward_kernel(cp.asarray(z), out=out) is out
    _assert_rows_close(cp.asnumpy(out), cpu.forward_kernel(z), "float32", "out=")
    grad = np.ones_like(z)
    assert gpu.backward_kernel(cp.asarray(z), cp.asarray(grad), out=out) is out
    _assert_rows_close(cp.asnumpy(out), cpu.backward_kernel(z, grad), "float32", "out= backward")
    with pytest.raises(TypeError, match="dtype"):
        gpu.forward_kernel(cp.asarray(z), out=cp.empty((3, 100), dtype=cp.float64))


def test_numpy_input_is_a_type_error(cp):
    gpu, _ = _pair(["relu", "sin"], "float32")
    with pytest.raises(TypeError, match="cupy.asarray"):
        gpu.forward_kernel(np.zeros((2, 4), dtype=np.float32))
    with pytest.raises(TypeError):
        gpu.backward_kernel(cp.zeros((2, 4), dtype=cp.float32), np.zeros((2, 4), dtype=np.float32))


def test_wrong_rows_and_dtype_are_errors(cp):
    gpu, _ = _pair(["relu", "sin"], "float32")
    with pytest.raises(ValueError, match="rows"):
        gpu.forward_kernel(cp.zeros((3, 4), dtype=cp.float32))
    with pytest.raises(TypeError, match="dtype"):
        gpu.forward_kernel(cp.zeros((2, 4), dtype=cp.float64))


@pytest.mark.skipif(GPU_COUNT < 2, reason="needs two CUDA devices")
def test_array_on_another_device_is_a_value_error(cp):
    gpu, _ = _pair(["relu", "sin"], "float32")
    with cp.cuda.Device(1):
        other = cp.zeros((2, 4), dtype=cp.float32)
    with pytest.raises(ValueError, match="device 1"):
        gpu.forward_kernel(other)


# -- constants and devices -------------------------------------------------------------------------------
def test_constants_update_without_recompiling(cp, monkeypatch):
    from heterosymnn.codegen import cuda_source

    gpu, cpu = _pair([("a*sin(w*num) + b", {"a": 1.0, "w": 2.0, "b": 0.0}), "relu"], "float64")
    renders = []
    monkeypatch.setattr(cuda_source, "render_cuda_module",
                        lambda *a, **k: renders.append(1) or pytest.fail("source regenerated"))
    for compiler in (gpu, cpu):
        compiler.set_constants(0, a=-3.0, w=0.5, b=0.25)
    z = _inputs(2, 50, "float64")
    _check_activation(cp, gpu, cpu, z, "float64", "after set_constants")
    assert gpu.constants[0] == {"a": -3.0, "w": 0.5, "b": 0.25} and not renders


def test_set_gpu_id_to_a_valid_device_keeps_constants(cp):
    gpu, cpu = _pair([("k*num", {"k": 2.0}), "sin"], "float32")
    gpu.set_constants(0, k=5.0)
    cpu.set_constants(0, k=5.0)
    gpu.set_gpu_id(GPU_COUNT - 1)
    assert gpu.device_id == GPU_COUNT - 1
    with cp.cuda.Device(GPU_COUNT - 1):
        _check_activation(cp, gpu, cpu, _inputs(2, 40, "float32"), "float32", "after set_gpu_id")
    gpu.set_gpu_id(0)
    _check_activation(cp, gpu, cpu, _inputs(2, 40, "float32"), "float32", "back on device 0")


def test_set_gpu_id_to_a_missing_device_names_the_devices_that_exist(cp):
    gpu, cpu = _pair(["relu", "sin"], "float32")
    with pytest.raises(InvalidDeviceIDError, match=rf"device {GPU_COUNT} does not exist.*{GPU_COUNT} CUDA device"):
        gpu.set_gpu_id(GPU_COUNT)
    assert gpu.device_id == 0
    _check_activation(cp, gpu, cpu, _inputs(2, 40, "float32"), "float32", "after a refused move")


def test_set_gpu_id_redoes_no_parsing_derivation_or_source_generation(cp, monkeypatch):
    calls = count_front_end_calls(monkeypatch)
    gpu = SymbolicJITCompiler(["relu", ("a*sin(num)", {"a": 2.0})], "GPU_CUDA", strict=True)
    assert calls == {"analyze": 1, "render": 1}  # the counters see the build
    for device in [*range(GPU_COUNT), 0]:
        gpu.set_gpu_id(device)
    assert calls == {"analyze": 1, "render": 1}
    z = cp.asarray(np.array([[-1.0, 2.0], [0.5, 1.0]], dtype=np.float32))
    np.testing.assert_allclose(cp.asnumpy(gpu.forward_kernel(z)),
                               [[0.0, 2.0], [2 * np.sin(0.5), 2 * np.sin(1.0)]], rtol=1e-6)


def test_probe_kernel_runs():
    from heterosymnn.backends.cuda import run_probe

    run_probe(0)


def test_kernels_come_from_a_cubin_in_the_shared_cache(cp, monkeypatch):
    import json
    from pathlib import Path

    from heterosymnn import cache
    from heterosymnn.toolchains.cuda_compiler import elf_architecture

    gpu, cpu = _pair(["relu", ("a*sin(num)", {"a": 2.0})], "float32")
    arch = f"sm_{cp.cuda.Device(0).compute_capability}"
    path = Path(gpu._kernels.module_path)
    assert path.is_relative_to(cache.default_cache().root)
    if path.suffix == ".cubin":
        assert elf_architecture(path.read_bytes()) == arch
    log = [json.loads(line) for line in cache.default_cache().layout.log.read_text().splitlines()]
    assert [line["kind"] for line in log if line["kind"].startswith("cuda-")] in (["cuda-cubin"], ["cuda-ptx"])
    calls = count_front_end_calls(monkeypatch)
    again = SymbolicJITCompiler(["relu", ("a*sin(num)", {"a": 2.0})], "GPU_CUDA", strict=True)
    assert calls == {"analyze": 0, "render": 0} and again._kernels.module_path == str(path)
    _check_activation(cp, again, cpu, _inputs(2, 40, "float32"), "float32", "warm from the cache")
