"""What a warm start does not import until it is used: loggers and package attributes.

A warm start (import, load cached kernels, call) may add ~50 ms to a bare
``import numpy``, and each module it imports for nothing costs 1-5 ms of that.

* :func:`get_logger`: importing ``logging`` (with the ``traceback`` and ``string``
  modules it pulls in) took ~4 ms, and a warm start logs nothing. Every module of
  the package gets its logger here; messages, levels and handlers are the
  standard library's, configured as usual (``logging.getLogger("heterosymnn")``).
* :func:`lazy_exports`: a package's names that live in modules only some uses
  need (the compiler detectors, the bundle and pruning code), imported from the
  package but loaded on first access.
"""
from __future__ import annotations

import sys
from typing import Any, Callable, Dict, List, Mapping, Tuple


def _dropped(*args: Any, **kwargs: Any) -> None:
    return None


class LazyLogger:
    """Stands for ``logging.getLogger(name)``; every attribute comes from that logger.

    ``debug`` and ``info`` messages sent while nothing has imported ``logging`` are
    dropped without importing it: then nobody configured a handler or a level, and
    ``logging`` itself would drop them (the root level is WARNING; its last-resort
    handler prints warnings and above, which always go through).

    The standard logger itself exists from the first message on, so a
    ``logging.config.dictConfig(..., disable_existing_loggers=True)`` run before that does
    not disable it (configure ``"heterosymnn"`` by name to quieten the package).
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


def lazy_exports(package: str, modules: Mapping[str, str], namespace: Dict[str, Any]
                 ) -> Tuple[Callable[[str], Any], Callable[[], List[str]]]:
    """``(__getattr__, __dir__)`` for the package ``package``: ``modules`` maps an exported
    name to the submodule (relative to the package) that defines it, imported on the first
    access to the name; ``namespace`` is the package's ``globals()``."""

    def __getattr__(name: str) -> Any:
        if name in modules:
            import importlib

            return getattr(importlib.import_module(f".{modules[name]}", package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> List[str]:
        return sorted(set(namespace) | set(modules))

    return __getattr__, __dir__
