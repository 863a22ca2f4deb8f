"""Compatibility alias: ``from HeteroSymNN.JIT.compiler import SymbolicJITCompiler``."""
from heterosymnn.errors import (  # noqa: F401
    BackendUnavailableError,
    FormulaParsingError,
    InvalidDeviceIDError,
    JITCompilationError,
    PerformanceWarning,
)
from heterosymnn.jit.compiler import SymbolicJITCompiler  # noqa: F401

__all__ = ["SymbolicJITCompiler"]
