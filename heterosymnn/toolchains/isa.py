"""Which instruction-set level to build for, and the flags that say so.

The cache is shared and keyed, so code is built for a *named* level the
running CPU supports (x86-64-v3, x86-64-v2, ...), never ``-march=native``: an
artifact built on one machine must be safe to load on every machine whose key
matches. x86-64 is capped at v3: v4 (AVX-512) helps little for scalar-math
kernels, lowers clocks on several CPUs and would split the cache further.
"""
from __future__ import annotations

import functools
import platform
import sys
from typing import Iterable, List, Optional, Tuple

from ..deferred import get_logger

logger = get_logger(__name__)

X86_64_V2 = frozenset({"sse3", "ssse3", "sse4_1", "sse4_2", "popcnt", "cx16", "lahf"})
X86_64_V3 = X86_64_V2 | {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "movbe", "lzcnt"}

# Names operating systems report for the features above.
_ALIASES = {
    "pni": "sse3", "abm": "lzcnt", "lahf_lm": "lahf", "avx1.0": "avx",
    "sse4.1": "sse4_1", "sse4.2": "sse4_2", "cx16": "cx16", "sse3": "sse3",
}

LEVELS = ("x86-64-v3", "x86-64-v2", "x86-64", "armv8-a", "generic")

# Explicit feature flags, for GCC/Clang releases that predate the
# -march=x86-64-vN names (GCC < 11, Clang < 12).
_X86_FEATURE_FLAGS = {
    "x86-64-v2": ("-msse3", "-mssse3", "-msse4.1", "-msse4.2", "-mpopcnt", "-mcx16", "-msahf"),
    "x86-64-v3": ("-msse3", "-mssse3", "-msse4.1", "-msse4.2", "-mpopcnt", "-mcx16", "-msahf",
                  "-mavx", "-mavx2", "-mbmi", "-mbmi2", "-mf16c", "-mfma", "-mmovbe", "-mlzcnt"),
}
_ZIG_CPU = {"x86-64-v3": "x86_64_v3", "x86-64-v2": "x86_64_v2", "x86-64": "x86_64",
            "armv8-a": "generic", "generic": "baseline"}


def normalise_features(flags: Iterable[str]) -> frozenset:
    """Map OS-specific feature names (``pni``, ``abm``, ``SSE4.2``) to ours."""
    out = set()
    for flag in flags:
        name = flag.strip().lower()
        out.add(_ALIASES.get(name, name))
    return frozenset(out)


def level_from_features(machine: str, features: Iterable[str]) -> str:
    """The highest supported level for a machine name and its CPU features.

    Parameters
    ----------
    machine : str
        ``platform.machine()`` style name (``x86_64``, ``AMD64``, ``aarch64``...).
    features : iterable of str
        CPU feature names as the OS reports them.

    Returns
    -------
    str
        One of :data:`LEVELS`.
    """
    machine = machine.lower()
    if machine in ("aarch64", "arm64"):
        return "armv8-a"
    if machine not in ("x86_64", "amd64", "x64"):
        return "generic"
    have = normalise_features(features)
    if X86_64_V3 <= have:
        return "x86-64-v3"
    if X86_64_V2 <= have:
        return "x86-64-v2"
    return "x86-64"


def _linux_features(cpuinfo: str) -> Optional[List[str]]:
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return value.split()
    except OSError as exc:
        logger.debug("cannot read %s: %s", cpuinfo, exc)
    return None


def _macos_features() -> Optional[List[str]]:
    import subprocess  # here only: Linux and Windows processes never need it

    words: List[str] = []
    for key in ("machdep.cpu.features", "machdep.cpu.leaf7_features", "machdep.cpu.extfeatures"):
        try:
            out = subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        words += out.stdout.split()
    return words or None


def _windows_features() -> Optional[List[str]]:
    # IsProcessorFeaturePresent reports SSE/AVX levels but not BMI/FMA; every
    # CPU with AVX2 has those (Haswell, Zen and later), so AVX2 stands for v3.
    try:
        import ctypes

        present = ctypes.windll.kernel32.IsProcessorFeaturePresent  # type: ignore[attr-defined]
    except (ImportError, AttributeError, OSError):
        return None
    feats = []
    if present(38) and present(36):  # PF_SSE4_2 / PF_SSSE3_INSTRUCTIONS_AVAILABLE
        feats += list(X86_64_V2)
        if present(40) and present(39):  # PF_AVX2 / PF_AVX_INSTRUCTIONS_AVAILABLE
            feats += list(X86_64_V3)
    return feats


def cpu_features(system: Optional[str] = None, cpuinfo: str = "/proc/cpuinfo") -> Optional[List[str]]:
    """The CPU feature names the operating system reports, or None when it cannot tell.

    Parameters
    ----------
    system : str, optional
        ``sys.platform`` style name; default the running one.
    cpuinfo : str
        The file Linux reports features in (tests pass another).
    """
    system = system or sys.platform
    if system.startswith("linux"):
        return _linux_features(cpuinfo)
    if system == "darwin":
        return _macos_features()
    if system == "win32":
        return _windows_features()
    return None


def detect_level(machine: Optional[str] = None, system: Optional[str] = None,
                 cpuinfo: str = "/proc/cpuinfo") -> str:
    """The instruction-set level of the running CPU (uncached).

    Falls back to the architecture baseline (``x86-64``) when the features
    cannot be read.
    """
    machine = machine or platform.machine()
    system = system or sys.platform
    if machine.lower() not in ("x86_64", "amd64", "x64"):
        return level_from_features(machine, ())
    feats = cpu_features(system, cpuinfo)
    if feats is None:
        logger.info("CPU features unknown on %s; building for the x86-64 baseline", system)
        return "x86-64"
    return level_from_features(machine, feats)


@functools.lru_cache(maxsize=None)
def host_level() -> str:
    """:func:`detect_level` for this process, computed once."""
    level = detect_level()
    logger.debug("host instruction-set level: %s", level)
    return level


def runs_on(level: str, host: str) -> bool:
    """Whether code built for ``level`` can run on a CPU of level ``host``.

    x86-64 levels are ordered (v3 includes v2, which includes the baseline);
    ``generic`` code runs anywhere; other levels only on themselves. An unknown
    level (a record from another version, a damaged file) never runs.

    Parameters
    ----------
    level : str
        The level an artifact or toolchain targets (one of :data:`LEVELS`).
    host : str
        The running CPU's level, usually :func:`host_level`.
    """
    if level == "generic":
        return True
    x86 = ("x86-64", "x86-64-v2", "x86-64-v3")
    if level in x86 and host in x86:
        return x86.index(level) <= x86.index(host)
    return level == host and level in LEVELS


def _fallbacks(level: str) -> Tuple[str, ...]:
    order = LEVELS[:3] if level.startswith("x86-64") else (level,)
    start = order.index(level) if level in order else 0
    return tuple(order[start:]) + ("generic",)


def isa_candidates(family: str, level: str) -> List[Tuple[str, Tuple[str, ...]]]:
    """Flag sets for ``level`` and every lower one, best first.

    A detector tries them in order and keeps the first the compiler accepts,
    so an old compiler degrades to a lower level instead of failing.

    Parameters
    ----------
    family : str
        ``"gcc"``, ``"clang"``, ``"zig"`` or ``"msvc"``.
    level : str
        One of :data:`LEVELS`.

    Returns
    -------
    list of (isa, flags)
        ``isa`` is the level the flags really target.
    """
    out: List[Tuple[str, Tuple[str, ...]]] = []
    for lvl in _fallbacks(level):
        if family == "msvc":
            # MSVC x64 targets SSE2 unless told otherwise; /arch:AVX2 is its v3.
            if lvl == "x86-64-v3":
                out.append((lvl, ("/arch:AVX2",)))
            elif lvl in ("x86-64-v2", "x86-64"):
                out.append(("x86-64", ()))
            else:
                out.append((lvl, ()))
        elif family == "zig":
            # zig reads -mcpu as cpu[+feature][-feature]: "x86-64-v3" would parse as
            # cpu "x86" minus features, so it needs its own CPU names.
            out.append((lvl, (f"-mcpu={_ZIG_CPU[lvl]}",)))
        elif lvl.startswith("x86-64"):
            out.append((lvl, (f"-march={lvl}", "-mtune=generic")))
            if lvl in _X86_FEATURE_FLAGS:
                out.append((lvl, ("-march=x86-64", "-mtune=generic") + _X86_FEATURE_FLAGS[lvl]))
        elif lvl == "armv8-a":
            out.append((lvl, ("-march=armv8-a",)))
        else:
            out.append((lvl, ()))
    # De-duplicate while keeping order (MSVC maps two levels to one flag set).
    seen = set()
    return [c for c in out if not (c in seen or seen.add(c))]
