"""The doctor's live checks: build a 3-node layer on each backend and run it.

Every backend is built with ``strict=True`` (a fallback would hide exactly the
problem the doctor is asked about) in the configured cache, the one the
user's own processes use. Results are compared with CPU_PYTHON; a failure
comes with the reason and the concrete fix.
"""
from __future__ import annotations

import sys
import time
import warnings
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..backends.base import CPU_JIT, CPU_PYTHON, GPU_CUDA
from ..config import settings

CHECK_CONFIGS = ["relu", "sin", ("a*tanh(num)", {"a": 2.0})]
# No exact zeros: relu's kink would test a convention rather than the backend.
CHECK_INPUT = np.array([[-1.5, -0.25, 0.5, 2.0]] * 3, dtype=np.float32) * np.array([[1.0], [0.7], [1.3]],
                                                                                  dtype=np.float32)
CHECK_GRAD = np.array([[1.0, -2.0, 0.5, 3.0]] * 3, dtype=np.float32)
BACKENDS = (CPU_PYTHON, CPU_JIT, GPU_CUDA)
REPORT_BUG = "please report it with the output of `python -m heterosymnn.doctor --json`"


def _causes(exc: BaseException) -> List[BaseException]:
    chain: List[BaseException] = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def _compiler_fix() -> str:
    cfg = settings()
    if cfg.toolchain:
        return (f"HETEROSYMNN_TOOLCHAIN={cfg.toolchain} is not usable (see toolchains): install that "
                "compiler or unset HETEROSYMNN_TOOLCHAIN to let heterosymnn choose")
    if cfg.cc:
        return (f"HETEROSYMNN_CC={cfg.cc} is not a working GCC/Clang-compatible compiler: point it at one "
                "(e.g. gcc) or unset HETEROSYMNN_CC")
    zig = "or `pip install heterosymnn[zig]` (a self-contained C compiler, no OpenMP)"
    if sys.platform == "win32":
        return f"install Visual Studio Build Tools with the 'Desktop development with C++' workload, {zig}"
    if sys.platform == "darwin":
        return f"run `xcode-select --install` (and `brew install libomp` for OpenMP), {zig}"
    return f"install gcc (`sudo apt install gcc` or `sudo dnf install gcc`), {zig}"


def _gpu_fix(cuda: Optional[Dict[str, Any]], message: str) -> str:
    if cuda is None or "cupy_version" not in cuda:
        return ("`pip install heterosymnn[gpu]` (CuPy for CUDA 12; pick the cupy-cudaXXx wheel matching "
                "your driver) on a machine with an NVIDIA GPU")
    if not cuda.get("device_count"):
        return ("CuPy is installed but sees no GPU: install or update the NVIDIA driver (`nvidia-smi` must "
                "list the GPU) and check CUDA_VISIBLE_DEVICES")
    if "not available in this version" in message:
        return "this heterosymnn has no GPU_CUDA backend: upgrade heterosymnn"
    if "no CUDA compiler" in message:
        return ("install NVRTC (`pip install nvidia-cuda-nvrtc-cu12`) or the CUDA toolkit (nvcc); the "
                "toolchains section says why each CUDA compiler is unusable")
    return f"check the CUDA section (driver and runtime versions must match CuPy's build); {REPORT_BUG}"


def diagnose(method: str, exc: BaseException, cuda: Optional[Dict[str, Any]] = None) -> Tuple[str, str]:
    """``(reason, fix)`` for a backend that could not be built or run."""
    from ..errors import CacheError, JITCompilationError, ToolchainNotFoundError

    reason = f"{type(exc).__name__}: {exc}".strip()
    chain = _causes(exc)
    if any(isinstance(e, ValueError) and "environment variable HETEROSYMNN_" in str(e) for e in chain):
        return reason, "fix or unset that environment variable (see the env section)"
    if any(isinstance(e, CacheError) for e in chain):
        return reason, "set HETEROSYMNN_CACHE_DIR to a writable directory on a local disk"
    if method == GPU_CUDA:
        return reason, _gpu_fix(cuda, str(exc))
    if any(isinstance(e, ToolchainNotFoundError) for e in chain):
        return reason, _compiler_fix()
    if any(isinstance(e, JITCompilationError) for e in chain):
        return reason, f"the C compiler rejected the generated code; {REPORT_BUG}"
    return reason, REPORT_BUG


def _run_once(method: str) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    from ..jit.compiler import SymbolicJITCompiler

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        comp = SymbolicJITCompiler(CHECK_CONFIGS, method, strict=True)
        xp = comp.array_module
        z, grad = xp.asarray(CHECK_INPUT), xp.asarray(CHECK_GRAD)
        fwd, bwd = comp.forward_kernel(z), comp.backward_kernel(z, grad)
    host = [np.asarray(a.get() if hasattr(a, "get") else a) for a in (fwd, bwd)]
    return host[0], host[1], [str(w.message).splitlines()[0] for w in caught]


def check_backend(method: str, reference: Optional[Tuple[np.ndarray, np.ndarray]] = None,
                  cuda: Optional[Dict[str, Any]] = None) -> Tuple[Dict[str, Any], Any]:
    """Build and run one backend; returns its report and its ``(fwd, bwd)`` (None on failure)."""
    start = time.perf_counter()
    try:
        fwd, bwd, notes = _run_once(method)
    except Exception as exc:
        reason, fix = diagnose(method, exc, cuda)
        return {"ok": False, "seconds": round(time.perf_counter() - start, 4), "reason": reason, "fix": fix}, None
    seconds = round(time.perf_counter() - start, 4)
    report: Dict[str, Any] = {"ok": True, "seconds": seconds, "reason": None, "fix": None}
    if notes:
        report["warnings"] = notes
    if reference is not None:
        bad = [name for name, got, want in (("forward", fwd, reference[0]), ("backward", bwd, reference[1]))
               if not np.allclose(got, want, rtol=1e-4, atol=1e-5, equal_nan=True)]
        if bad:
            report.update(ok=False, reason=f"{' and '.join(bad)} results differ from CPU_PYTHON",
                          fix=f"a wrong result is a bug: {REPORT_BUG}")
    return report, (fwd, bwd)


def probe_backends(cuda: Optional[Dict[str, Any]] = None) -> Dict[str, Dict[str, Any]]:
    """Live check of every backend, CPU_PYTHON first as the reference."""
    out: Dict[str, Dict[str, Any]] = {}
    reference = None
    for method in BACKENDS:
        out[method], result = check_backend(method, reference, cuda)
        if method == CPU_PYTHON:
            reference = result
        elif reference is None and out[method]["ok"]:
            out[method].setdefault("warnings", []).append("not compared: CPU_PYTHON failed")
    return out
