"""The doctor's CUDA compiler rows: NVRTC and nvcc, found or why not, and which is used.

One row per detector (see :mod:`heterosymnn.toolchains.cuda_compiler`), shaped
like the C toolchain rows (``name``, ``usable``, ``path``, ``version``,
``reason``, ``openmp`` always None) plus ``kind: "cuda"``, ``architectures``
(the real architectures it builds cubins for), ``fix`` and ``selected`` (the one
GPU_CUDA and ``cache warm`` use, honouring ``HETEROSYMNN_CUDA_COMPILER``).
No GPU is needed for any of it.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional


def _selected() -> Optional[str]:
    from ..toolchains.cuda_compiler import find_cuda_compiler

    try:
        return find_cuda_compiler().name
    except Exception:  # none usable, or a bad HETEROSYMNN_CUDA_COMPILER: the rows say why
        return None


def compiler_rows() -> List[Dict[str, Any]]:
    """One JSON-ready dict per CUDA compiler detector, in preference order."""
    from ..toolchains.cuda_compiler import ENV_COMPILER, detect_cuda_compilers, forced_compiler

    selected = _selected()
    try:
        forced = forced_compiler()
        forced_problem = None
    except ValueError as exc:
        forced, forced_problem = None, str(exc)
    rows = []
    for status in detect_cuda_compilers():
        compiler = status.compiler
        reason = status.reason
        if compiler is not None and forced and forced != status.name:
            reason = f"not used: {ENV_COMPILER}={forced}"
        rows.append({
            "name": status.name,
            "kind": "cuda",
            "usable": status.usable,
            "selected": status.name == selected,
            "family": status.name,
            "path": compiler.path if compiler else None,
            "version": compiler.version if compiler else None,
            "architectures": list(compiler.architectures) if compiler else [],
            "options": list(compiler.options) if compiler else [],
            "openmp": None,
            "isa": None,
            "reason": forced_problem or reason,
            "fix": status.fix,
        })
    return rows
