"""Verified OpenMP and vector-math support for GCC-style compilers.

A compiler that accepts ``-fopenmp`` may still lack the runtime (Clang without
libomp, Apple clang always), so OpenMP counts only when a probe that starts a
parallel region builds *and runs*. Results are cached per compiler, version and
flags, since detection happens once per process but the probes cost a few
compiler runs each.
"""
from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass
from typing import List, Optional, Tuple

from . import flags
from .probe import build_probe
from ..deferred import get_logger

logger = get_logger(__name__)

OPENMP_PROBE = r"""
#include <omp.h>
#include <stdio.h>
int main(void) {
    int n = 0;
#pragma omp parallel reduction(+:n)
    n += 1;
    printf("%d %d\n", omp_get_max_threads(), n);
    return n >= 1 ? 0 : 1;
}
"""

LIBMVEC_PROBE = "int main(void) { return 0; }\n"

# Where Homebrew (Apple silicon, Intel) and MacPorts put libomp for Apple clang.
LIBOMP_PREFIXES = ("/opt/homebrew/opt/libomp", "/usr/local/opt/libomp")
_MACPORTS = ("/opt/local/include/libomp", "/opt/local/lib/libomp")


@dataclass(frozen=True)
class OpenMPSupport:
    """Result of the OpenMP probe.

    ``compile_args``/``link_args`` are empty and ``reason`` says why when
    OpenMP is unusable; ``max_threads`` is what the probe reported.
    """

    available: bool
    compile_args: Tuple[str, ...] = ()
    link_args: Tuple[str, ...] = ()
    max_threads: int = 0
    reason: str = ""


def openmp_candidates(family: str, apple: bool) -> List[Tuple[Tuple[str, ...], Tuple[str, ...]]]:
    """(compile_args, link_args) pairs to try, best first.

    Apple clang has no ``-fopenmp`` driver support: the preprocessor flag is
    passed through and Homebrew's (or MacPorts') libomp linked by hand.
    """
    if not apple:
        return [(flags.OPENMP, flags.OPENMP)]
    out = []
    for prefix in LIBOMP_PREFIXES:
        if os.path.isdir(os.path.join(prefix, "include")):
            out.append((("-Xpreprocessor", "-fopenmp", f"-I{prefix}/include"),
                        (f"-L{prefix}/lib", "-lomp")))
    if os.path.isdir(_MACPORTS[0]):
        out.append((("-Xpreprocessor", "-fopenmp", f"-I{_MACPORTS[0]}"),
                    (f"-L{_MACPORTS[1]}", "-lomp")))
    # libomp may also be on the default search paths (CPATH / LIBRARY_PATH).
    out.append((("-Xpreprocessor", "-fopenmp"), ("-lomp",)))
    return out


@functools.lru_cache(maxsize=None)
def probe_openmp(cc: Tuple[str, ...], version: str, family: str, apple: bool,
                 base_args: Tuple[str, ...] = ()) -> OpenMPSupport:
    """Find OpenMP flags that build and run a parallel region.

    Parameters
    ----------
    cc : tuple of str
        Compiler command.
    version : str
        Probed compiler version (part of the cache key only).
    family : str
        ``"gcc"`` or ``"clang"``.
    apple : bool
        Apple clang (needs ``-Xpreprocessor -fopenmp`` and libomp).
    base_args : tuple of str
        Flags every build uses (optimisation, ISA), so the probe matches them.

    Returns
    -------
    OpenMPSupport
    """
    failures = []
    for c_args, l_args in openmp_candidates(family, apple):
        result = build_probe(cc, OPENMP_PROBE, base_args + c_args, l_args, execute=True)
        if result.ok:
            try:
                threads = int(result.output.split()[0])
            except (IndexError, ValueError):
                failures.append(f"unexpected probe output {result.output!r}")
                continue
            logger.debug("OpenMP works with %s %s (%d threads)", c_args, l_args, threads)
            return OpenMPSupport(True, c_args, l_args, threads)
        failures.append(result.summary())
    fix = ("install libomp (`brew install libomp`)" if apple else
           "install the OpenMP runtime (libgomp comes with gcc; for clang install libomp, "
           "e.g. `apt install libomp-dev`)")
    reason = f"OpenMP unavailable, kernels run serially; to fix, {fix}. Probe: " + failures[-1]
    logger.info("%s %s: %s", family, version, reason)
    return OpenMPSupport(False, reason=reason)


@functools.lru_cache(maxsize=None)
def probe_libmvec(cc: Tuple[str, ...], version: str) -> bool:
    """Whether glibc's vector math library links (``-lmvec``).

    Only glibc has it; elsewhere the probe is skipped.
    """
    if not sys.platform.startswith("linux"):
        return False
    return build_probe(cc, LIBMVEC_PROBE, (), flags.LIBMVEC).ok


@functools.lru_cache(maxsize=None)
def probe_flags(cc: Tuple[str, ...], version: str, flags: Tuple[str, ...],
                env: Optional[Tuple[Tuple[str, str], ...]] = None) -> bool:
    """Whether the compiler accepts ``flags`` (compile only, warnings as errors).

    ``-Werror`` matters: GCC and Clang only *warn* about some unknown options.
    """
    environ = None if env is None else {**os.environ, **dict(env)}
    return build_probe(cc, LIBMVEC_PROBE, flags + ("-Werror",), link=False, env=environ).ok


def clear_caches() -> None:
    """Forget every probe result (for tests, or after installing a runtime)."""
    probe_openmp.cache_clear()
    probe_libmvec.cache_clear()
    probe_flags.cache_clear()
