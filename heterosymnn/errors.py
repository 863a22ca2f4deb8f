"""Every exception and warning heterosymnn raises, under one root each.

Callers catch :class:`HeteroSymNNError` to handle anything the library rejects;
the subclasses say which stage refused and carry the details a fix needs.
"""
from __future__ import annotations

from typing import Optional, Sequence


class HeteroSymNNError(Exception):
    """Root of every error raised by heterosymnn."""


class FormulaParsingError(HeteroSymNNError, ValueError):
    """A formula could not be turned into a usable expression.

    ``problems`` lists ``(node_index, message)`` for *every* broken node of a
    config list, so one error reports all of them at once.
    """

    def __init__(self, message: str, problems: Sequence[tuple[Optional[int], str]] = ()):
        super().__init__(message)
        self.problems = tuple(problems)

    @classmethod
    def from_problems(cls, problems: Sequence[tuple[Optional[int], str]]) -> "FormulaParsingError":
        lines = [f"node {i}: {msg}" if i is not None else msg for i, msg in problems]
        head = f"{len(problems)} formula(s) could not be parsed:" if len(problems) > 1 else ""
        text = "\n  ".join([head] + lines) if head else lines[0]
        return cls(text, problems)


class JITCompilationError(HeteroSymNNError, RuntimeError):
    """The compiler rejected generated code; carries its output and the kept source."""

    def __init__(self, message: str, compiler_output: str = "", source_path: Optional[str] = None):
        details = message
        if source_path:
            details += f"\nGenerated source kept at: {source_path}"
        if compiler_output:
            details += f"\nCompiler output:\n{compiler_output.strip()}"
        super().__init__(details)
        self.compiler_output = compiler_output
        self.source_path = source_path


class InvalidDeviceIDError(HeteroSymNNError, ValueError):
    """A GPU id that does not name an existing device."""


class BackendUnavailableError(HeteroSymNNError, RuntimeError):
    """A requested backend cannot run here (and ``strict`` forbids falling back)."""


class ToolchainNotFoundError(BackendUnavailableError):
    """No usable C compiler was found; the message says how to install one."""


class CacheError(HeteroSymNNError, OSError):
    """The kernel cache could not be used (lock timeout, unusable directory...)."""


class InternalError(HeteroSymNNError, RuntimeError):
    """A bug inside heterosymnn (not in the user's formulas or set-up).

    The original exception is chained as ``__cause__``, so its traceback is
    shown; the message says where the failure happened and how to report it.
    """

    @classmethod
    def wrapping(cls, where: str, error: BaseException) -> "InternalError":
        """The error for an unexpected ``error`` raised while doing ``where``."""
        return cls(f"internal error in heterosymnn while {where}: {type(error).__name__}: {error}. "
                   f"{REPORT_HINT}")


#: Where a bug goes: said by every InternalError.
REPORT_HINT = ("This is a bug in heterosymnn, not in your input: please report it on the heterosymnn "
               "issue tracker with the full traceback, the formulas involved and the output of "
               "`python -m heterosymnn.doctor`.")


class PerformanceWarning(UserWarning):
    """A slower path is being used; the message says why and how to fix it."""


class CompilationWarning(UserWarning):
    """Something in a formula or a build deserves attention but is not fatal."""
