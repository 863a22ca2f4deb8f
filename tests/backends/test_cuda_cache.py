"""GPU_CUDA loads its kernels only from the shared cache: cubins built by our compiler,
loaded with ``RawModule(path=...)``, one build per architecture, warm starts without SymPy.

CuPy and the GPU are simulated (``tests/cuda_emulation.py``: this machine has neither);
the compilers and cubins are real: the simulated ``RawModule`` refuses ``code=`` and checks
that the file it is given is a cubin for the device's architecture before running the
source kept beside it on the host.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cuda_emulation
from counting import count_front_end_calls
from heterosymnn import SymbolicJITCompiler, cache
from heterosymnn.cache.warm import warm_layers
from heterosymnn.toolchains.cuda_compiler import elf_architecture

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CONFIGS = [("a*sin(num) + b", {"a": 2.0, "b": 0.5}), "relu", "tanh"]


def _cubins_logged():
    path = cache.default_cache().layout.log
    lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [line for line in lines if line.get("kind") == "cuda-cubin"]


def _expected(z):
    return np.stack([2.0 * np.sin(z[0]) + 0.5, np.maximum(z[1], 0.0), np.tanh(z[2])])


def test_kernels_are_loaded_from_cubins_in_the_shared_cache(monkeypatch, tmp_path):
    sim = cuda_emulation.simulated_cupy(monkeypatch, tmp_path, n_devices=1)
    gpu = SymbolicJITCompiler(CONFIGS, "GPU_CUDA", dtype="float64", strict=True)
    root = cache.default_cache().root
    ((device, path),) = sim.modules
    assert device == 0 and Path(path).is_relative_to(root) and path.endswith("kernels.cubin")
    assert elf_architecture(Path(path).read_bytes()) == "sm_80"
    assert gpu._kernels.module_path == path
    (logged,) = _cubins_logged()
    assert logged["toolchain"].endswith("-> sm_80") and logged["functions"] == 3
    z = np.linspace(-3, 3, 3 * 40).reshape(3, 40)
    np.testing.assert_allclose(gpu.forward_kernel(sim.module.asarray(z)), _expected(z), rtol=1e-12)

    cache.reset_stats()
    calls = count_front_end_calls(monkeypatch)
    again = SymbolicJITCompiler(CONFIGS, "GPU_CUDA", dtype="float64", strict=True)
    assert calls == {"analyze": 0, "render": 0} and cache.stats().builds == 0
    assert sim.modules[-1] == (0, path) and len(_cubins_logged()) == 1
    np.testing.assert_allclose(again.forward_kernel(sim.module.asarray(z)), _expected(z), rtol=1e-12)


def test_another_architecture_builds_once_for_it(monkeypatch, tmp_path):
    sim = cuda_emulation.simulated_cupy(monkeypatch, tmp_path, n_devices=3, archs=["80", "90", "80"])
    calls = count_front_end_calls(monkeypatch)
    gpu = SymbolicJITCompiler(CONFIGS, "GPU_CUDA", dtype="float32", strict=True)
    assert calls == {"analyze": 1, "render": 1}
    gpu.set_gpu_id(2)  # same architecture: the same cubin, nothing built
    assert calls["render"] == 1 and len(_cubins_logged()) == 1 and sim.modules[1][1] == sim.modules[0][1]
    gpu.set_gpu_id(1)  # sm_90: generated once more and built for it, never parsed again
    assert calls == {"analyze": 1, "render": 2}
    assert sorted(line["toolchain"].rsplit(" ", 1)[-1] for line in _cubins_logged()) == ["sm_80", "sm_90"]
    assert elf_architecture(Path(sim.modules[-1][1]).read_bytes()) == "sm_90"
    z = np.linspace(-3, 3, 3 * 33).reshape(3, 33).astype(np.float32)
    with sim.module.cuda.Device(1):
        np.testing.assert_allclose(gpu.forward_kernel(sim.module.asarray(z)), _expected(z), rtol=3e-6, atol=1e-6)
    for device in (0, 1, 2):
        gpu.set_gpu_id(device)
    other = SymbolicJITCompiler(CONFIGS, "GPU_CUDA", dtype="float32", device_id=1, strict=True)
    assert other.device_id == 1 and calls == {"analyze": 1, "render": 2} and len(_cubins_logged()) == 2


WORKER = """
import json, sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
import numpy as np
import cuda_emulation
sim = cuda_emulation.SimulatedCupy(1, Path(sys.argv[2]))
sys.modules["cupy"] = sim.module
from heterosymnn import SymbolicJITCompiler, cache
configs = json.loads(sys.argv[3])
gpu = SymbolicJITCompiler(configs, "GPU_CUDA", dtype="float64", strict=True)
z = np.linspace(-3, 3, 3 * 40).reshape(3, 40)
out = gpu.forward_kernel(sim.module.asarray(z))
print("RESULT " + json.dumps({"sympy": "sympy" in sys.modules, "builds": cache.stats().builds,
                              "method": gpu.calculation_method, "modules": sim.modules,
                              "forward": np.asarray(out).tolist()}))
"""


def test_warm_gpu_construction_in_a_new_process_imports_no_sympy(fresh_cache_dir, tmp_path):
    if not cuda_emulation.have_gxx():
        pytest.skip("no g++ for the host emulation")
    report = warm_layers([CONFIGS], targets=["sm_80"], dtypes=["float64"])
    if report.failed:
        pytest.skip(f"no CUDA compiler here: {report.failed[0].reason}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HETEROSYMNN_")}
    env.update(PYTHONPATH=str(REPO), HETEROSYMNN_CACHE_DIR=str(fresh_cache_dir))
    proc = subprocess.run([sys.executable, "-c", WORKER, str(HERE.parent), str(tmp_path / "emu"),
                           json.dumps(CONFIGS)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1][7:])
    assert result["method"] == "GPU_CUDA" and result["builds"] == 0 and result["sympy"] is False, (
        cache.default_cache().layout.log.read_text())
    cubin = [e for e in report.built if e.kind == "cuda-cubin"][0]
    assert Path(result["modules"][0][1]).parent == cache.default_cache().layout.entry_dir(cubin.key)
    z = np.linspace(-3, 3, 3 * 40).reshape(3, 40)
    np.testing.assert_allclose(result["forward"], _expected(z), rtol=1e-12)


def test_an_architecture_newer_than_the_compiler_knows_loads_ptx(monkeypatch, tmp_path):
    import dataclasses

    from heterosymnn.toolchains import cuda_compiler

    sim = cuda_emulation.simulated_cupy(monkeypatch, tmp_path, n_devices=1, archs=["120"])
    real = cuda_compiler.find_cuda_compiler()
    # A real compiler, made to know only older architectures (as an old NVRTC on a new GPU).
    old = dataclasses.replace(real, architectures=("sm_75", "sm_80", "sm_90"))
    monkeypatch.setattr(cuda_compiler, "find_cuda_compiler", lambda name=None: old)
    gpu = SymbolicJITCompiler(CONFIGS, "GPU_CUDA", dtype="float64", strict=True)
    ((_, path),) = sim.modules
    assert path.endswith("kernels.ptx") and b".target sm_90" in Path(path).read_bytes()
    (entry,) = [e for e in cache.list_entries() if e["metadata"].get("kind") == "cuda-ptx"]
    assert entry["metadata"]["target"] == "compute_90" and entry["metadata"]["arch"] == "compute_90"
    z = np.linspace(-3, 3, 3 * 40).reshape(3, 40)
    np.testing.assert_allclose(gpu.forward_kernel(sim.module.asarray(z)), _expected(z), rtol=1e-12)
