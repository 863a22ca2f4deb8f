"""Choosing a backend: try the requested one, fall back along GPU_CUDA -> CPU_JIT -> CPU_PYTHON.

A backend that cannot run (no GPU, no compiler, a failed build) is skipped
with a ``PerformanceWarning`` that says why and how to fix it; with
``strict`` the first failure is raised instead.
"""
from __future__ import annotations

import importlib
import warnings
from typing import Callable, Dict, List, Tuple

from ..errors import (BackendUnavailableError, FormulaParsingError, HeteroSymNNError, InternalError,
                      InvalidDeviceIDError, PerformanceWarning)
from ..backends.base import AUTO, CPU_JIT, CPU_PYTHON, GPU_CUDA, METHODS, Kernels

FALLBACKS = {
    GPU_CUDA: (GPU_CUDA, CPU_JIT, CPU_PYTHON),
    CPU_JIT: (CPU_JIT, CPU_PYTHON),
    CPU_PYTHON: (CPU_PYTHON,),
    AUTO: (GPU_CUDA, CPU_JIT, CPU_PYTHON),
}

# backend name -> "module:function" building its Kernels; imported lazily so that a
# missing optional dependency (CuPy) never breaks importing heterosymnn.
BUILDERS: Dict[str, str] = {
    CPU_PYTHON: "heterosymnn.backends.python:build",
    CPU_JIT: "heterosymnn.backends.cpu_jit:build",
    GPU_CUDA: "heterosymnn.backends.cuda:build",
}


def normalize_method(method: str) -> str:
    name = str(method).upper()
    if name not in METHODS:
        raise ValueError(f"calculation_method must be one of {', '.join(METHODS)}, got {method!r}")
    return name


def _builder(method: str) -> Callable[..., Kernels]:
    target = BUILDERS.get(method)
    if target is None:
        raise BackendUnavailableError(
            f"the {method} backend is not available in this version of heterosymnn")
    module_name, _, function = target.partition(":")
    return getattr(importlib.import_module(module_name), function)


def select_backend(method: str, strict: bool, build_args: dict) -> Tuple[Kernels, List[str]]:
    """Build kernels with the first backend of the fallback chain that works.

    Returns the kernels and the reasons the earlier backends were skipped.
    Every failure of a backend falls back (or, under ``strict``, raises), whatever
    its type; only a formula error, which no other backend can fix, is raised at once.
    """
    reasons: List[str] = []
    chain = FALLBACKS[method]
    for candidate in chain:
        try:
            return _builder(candidate)(**build_args), reasons
        except FormulaParsingError:
            raise
        except Exception as raised:  # noqa: BLE001 - classified below, never swallowed silently
            exc = _classify(candidate, raised)
        reasons.append(f"{candidate}: {exc}")
        if candidate == chain[-1] and isinstance(exc, InternalError):
            raise exc
        quiet = method == AUTO and candidate == GPU_CUDA
        if strict and not quiet:
            if isinstance(exc, (BackendUnavailableError, InvalidDeviceIDError)):
                raise exc
            raise BackendUnavailableError(f"{candidate} could not be used (strict mode): {exc}") from exc
        if not quiet and candidate != chain[-1]:
            warnings.warn(
                f"{candidate} is not available, falling back to {chain[chain.index(candidate) + 1]}: "
                f"{exc}", PerformanceWarning, stacklevel=4)
    raise BackendUnavailableError("no backend could be built:\n  " + "\n  ".join(reasons))


def _classify(candidate: str, raised: Exception) -> HeteroSymNNError:
    """Our own errors as they are; the environment's (``OSError``) as an unusable backend;
    anything else as a bug of ours, chained to the original so its traceback survives."""
    if isinstance(raised, HeteroSymNNError):
        return raised
    if isinstance(raised, OSError):
        error: HeteroSymNNError = BackendUnavailableError(f"{type(raised).__name__}: {raised}")
    else:
        error = InternalError.wrapping(f"building the {candidate} backend", raised)
    error.__cause__ = raised
    return error
