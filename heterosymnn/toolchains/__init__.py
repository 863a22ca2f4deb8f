"""Which C compiler builds the CPU kernels, with which flags.

:func:`find_toolchain` picks one (honouring ``HETEROSYMNN_TOOLCHAIN`` and
``HETEROSYMNN_CC``); :func:`detect_all` reports every detector, usable or not,
with the reason. A :class:`Toolchain`'s :meth:`~Toolchain.identity` goes into
the cache key.
"""
from __future__ import annotations

from .gcc_clang import detect_gcc_clang
from .isa import host_level
from .msvc import detect_msvc
from .select import FAMILIES, clear_caches, detect_all, find_toolchain
from .toolchain import DetectorResult, Toolchain
from .zig import detect_zig, zig_cross_compile_check

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
