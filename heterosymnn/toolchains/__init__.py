"""Which C compiler builds the CPU kernels, with which flags.

:func:`find_toolchain` picks one (honouring ``HETEROSYMNN_TOOLCHAIN`` and
``HETEROSYMNN_CC``); :func:`detect_all` reports every detector, usable or not,
with the reason. A :class:`Toolchain`'s :meth:`~Toolchain.identity` goes into
the cache key.
"""
from __future__ import annotations

from ..deferred import lazy_exports

# Names are loaded on first use: a warm process only reads the persisted
# toolchain record and never needs the detectors (nor subprocess) imported.
_LAZY = {
    "DetectorResult": "detected", "Toolchain": "toolchain", "host_level": "isa",
    "FAMILIES": "select", "clear_caches": "select", "detect_all": "select", "find_toolchain": "select",
    "detect_gcc_clang": "gcc_clang", "detect_msvc": "msvc",
    "detect_zig": "zig", "zig_cross_compile_check": "zig",
}

__all__ = [
    "DetectorResult",
    "FAMILIES",
    "Toolchain",
    "clear_caches",
    "detect_all",
    "detect_gcc_clang",
    "detect_msvc",
    "detect_zig",
    "find_toolchain",
    "host_level",
    "zig_cross_compile_check",
]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
