"""The compiler: orchestration, backend selection and argument checks."""
from .compiler import SymbolicJITCompiler

__all__ = ["SymbolicJITCompiler"]
