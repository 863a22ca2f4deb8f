"""Choosing the toolchain: the user's explicit choice, else the best one found.

Order: ``HETEROSYMNN_TOOLCHAIN`` (a family), else ``HETEROSYMNN_CC``, else MSVC
(Windows), GCC/Clang, Zig. An explicit choice that does not work is an error
naming why, never a silent switch to another compiler.
"""
from __future__ import annotations

import sys
from typing import Callable, Dict, List

from ..config import settings
from ..errors import ToolchainNotFoundError
from . import gcc_clang, isa, msvc, openmp, zig
from .detected import DetectorResult
from .toolchain import Toolchain
from ..deferred import get_logger

logger = get_logger(__name__)

FAMILIES = ("gcc", "clang", "msvc", "zig")

FIXES = (
    "Linux: install gcc (`sudo apt install gcc`, `sudo dnf install gcc`)",
    "macOS: install the Xcode command line tools (`xcode-select --install`)",
    f"Windows: {msvc.INSTALL_HINT}",
    f"anywhere: {zig.INSTALL_HINT} (a self-contained C compiler; kernels run without OpenMP)",
)


def _detectors() -> Dict[str, Callable[[], DetectorResult]]:
    # Looked up at call time so that each module's detector is the one in use.
    return {msvc.NAME: msvc.detect_msvc, gcc_clang.NAME: gcc_clang.detect_gcc_clang,
            zig.NAME: zig.detect_zig}


def detect_all() -> List[DetectorResult]:
    """Run every detector, in preference order (for the doctor).

    Returns
    -------
    list of DetectorResult
        One per detector; unusable ones carry the reason.
    """
    results = []
    for name, detect in _detectors().items():
        try:
            results.append(detect())
        except Exception as exc:  # a broken detector must not hide the others
            logger.exception("toolchain detector %s failed", name)
            results.append(DetectorResult(name, None, f"detector crashed: {exc!r}"))
    return results


def _not_found(headline: str, results: List[DetectorResult], with_fixes: bool = True
               ) -> ToolchainNotFoundError:
    lines = [headline] + [f"  {r.name}: {r.reason}" for r in results]
    if with_fixes:
        lines.append("To get a C compiler, do one of:")
        lines += [f"  - {fix}" for fix in FIXES]
    return ToolchainNotFoundError("\n".join(lines))


def _forced(family: str) -> Toolchain:
    if family not in FAMILIES:
        raise ToolchainNotFoundError(
            f"HETEROSYMNN_TOOLCHAIN={family!r} is not a toolchain; use one of {', '.join(FAMILIES)}")
    if family == "msvc":
        result = msvc.detect_msvc()
    elif family == "zig":
        result = zig.detect_zig()
    else:
        result = gcc_clang.detect_gcc_clang(family)
    if settings().cc and family in ("msvc", "zig"):
        logger.warning("HETEROSYMNN_CC is ignored because HETEROSYMNN_TOOLCHAIN=%s", family)
    if result.toolchain is None:
        raise _not_found(f"HETEROSYMNN_TOOLCHAIN={family} was requested but is not usable:",
                         [result], with_fixes=False)
    return result.toolchain


def find_toolchain() -> Toolchain:
    """The toolchain CPU builds use.

    Returns
    -------
    Toolchain

    Raises
    ------
    ToolchainNotFoundError
        When the forced family or ``HETEROSYMNN_CC`` is unusable (with the
        reason), or when no compiler at all is usable (with every detector's
        reason and the ways to install one).
    """
    cfg = settings()
    if cfg.toolchain:
        toolchain = _forced(cfg.toolchain.strip().lower())
    elif cfg.cc:
        result = gcc_clang.detect_gcc_clang()
        if result.toolchain is None:
            raise _not_found(f"HETEROSYMNN_CC={cfg.cc!r} is not usable:", [result], with_fixes=False)
        toolchain = result.toolchain
    else:
        for name, detect in _detectors().items():
            if name == msvc.NAME and sys.platform != "win32":
                continue
            result = detect()
            if result.toolchain is not None:
                toolchain = result.toolchain
                break
        else:
            raise _not_found("No usable C compiler was found for the CPU_JIT backend:",
                             detect_all())
    logger.debug("toolchain: %s", toolchain.describe())
    return toolchain


def clear_caches() -> None:
    """Forget every cached detection and probe (tests; after installing a compiler)."""
    msvc.clear_caches()
    gcc_clang.clear_caches()
    zig.detect_zig.cache_clear()
    openmp.clear_caches()
    isa.host_level.cache_clear()
