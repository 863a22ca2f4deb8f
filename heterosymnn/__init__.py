"""heterosymnn: per-neuron symbolic activation functions compiled to native kernels.

>>> from heterosymnn import SymbolicJITCompiler
>>> comp = SymbolicJITCompiler(["relu", ("a*sin(num)", {"a": 2.0})], "CPU_PYTHON")
"""
from __future__ import annotations

from .errors import (
    BackendUnavailableError,
    CacheError,
    CompilationWarning,
    FormulaParsingError,
    HeteroSymNNError,
    InternalError,
    InvalidDeviceIDError,
    JITCompilationError,
    PerformanceWarning,
    ToolchainNotFoundError,
)
from .jit.compiler import SymbolicJITCompiler
from .source import render_source

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "CacheError",
    "CompilationWarning",
    "FormulaParsingError",
    "HeteroSymNNError",
    "InternalError",
    "InvalidDeviceIDError",
    "JITCompilationError",
    "PerformanceWarning",
    "SymbolicJITCompiler",
    "ToolchainNotFoundError",
    "render_source",
    "__version__",
]
