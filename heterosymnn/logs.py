"""Loggers that import :mod:`logging` on their first use instead of at import.

A warm start (import, load cached kernels, call) logs nothing, and importing
``logging`` (with the ``traceback`` and ``string`` modules it pulls in) took
~4 ms of the ~50 ms a warm start may add to a bare ``import numpy``. Every
module of the package gets its logger here; messages, levels and handlers are
the standard library's, configured as usual (``logging.getLogger("heterosymnn")``).
"""
from __future__ import annotations

import sys
from typing import Any


def _dropped(*args: Any, **kwargs: Any) -> None:
    return None


class LazyLogger:
    """Stands for ``logging.getLogger(name)``; every attribute comes from that logger.

    ``debug`` and ``info`` messages sent while nothing has imported ``logging`` are
    dropped without importing it: then nobody configured a handler or a level, and
    ``logging`` itself would drop them (the root level is WARNING; its last-resort
    handler prints warnings and above, which always go through).
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __getattr__(self, attribute: str) -> Any:
        if attribute in ("debug", "info") and "logging" not in sys.modules:
            return _dropped
        import logging

        return getattr(logging.getLogger(self.name), attribute)

    def __repr__(self) -> str:
        return f"<LazyLogger {self.name}>"


def get_logger(name: str) -> LazyLogger:
    """The logger ``name``, imported on its first message."""
    return LazyLogger(name)
