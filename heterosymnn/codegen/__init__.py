"""Expression -> source: SymPy printers for C (and later CUDA), kernel
templates and the cffi declarations of what they define.

Public entry points
-------------------
render_c(structures, dtype)          full C source, for users who want to read it
render_c_module(structures, dtype)   source + cffi cdef + name table (CModule)
render_runtime(dtype)                the generic layer driver (RuntimeSource): nodes first,
                                     with constants' gradient, features last
render_backward(structure, ...)      backward + constants-gradient functions of any target
CPrinter                             the SymPy printer the C family builds on
"""
from __future__ import annotations

from ..deferred import lazy_exports

# Attributes load their module on first use: the runtime driver and the version
# are needed by warm starts, which must not import SymPy (the printers do).
_EXPORTS = {
    "LIBMVEC_MACRO": "c_prelude",
    "OPENMP_SIMD_MACRO": "c_prelude",
    "CPrinter": "c_printer",
    "DTYPES": "dtypes",
    "UnsupportedExpressionError": "common",
    "CHUNK_ELEMENTS": "c_runtime",
    "PARALLEL_MIN_ELEMENTS": "c_runtime",
    "SPAN_ELEMENTS": "c_runtime",
    "TILE_SAMPLES": "c_runtime",
    "RuntimeSource": "c_runtime",
    "render_runtime": "c_runtime",
    "CODEGEN_VERSION": "dtypes",
    "CModule": "c_source",
    "render_c": "c_source",
    "render_c_module": "c_source",
    "row_function_names": "c_rows",
    "constants_grad_function_name": "c_rows",
    "render_backward": "c_rows",
    "PrintedUsage": "common",
    "Lowered": "lowering",
    "lower": "lowering",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
