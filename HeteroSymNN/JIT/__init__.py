"""Compatibility alias for ``HeteroSymNN.JIT``."""
from heterosymnn.jit import SymbolicJITCompiler  # noqa: F401
