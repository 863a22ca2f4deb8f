"""Element types and the code generator's version: what is needed without SymPy.

The runtime driver and the cache key use these during a warm start, which must
not import SymPy.
"""
from __future__ import annotations

from typing import Dict, Tuple

#: Bump whenever generated code changes meaning or speed: it is part of every cache key.
CODEGEN_VERSION = 1

#: dtype name -> (C type, short tag used in function names)
DTYPES: Dict[str, Tuple[str, str]] = {
    "float32": ("float", "f32"),
    "float64": ("double", "f64"),
}


def check_dtype(dtype: str) -> str:
    """Return ``dtype`` if it is a supported floating dtype name, else raise."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return dtype
