"""GCC and Clang (including Apple clang): find one, and prove it works.

Candidates come from ``HETEROSYMNN_CC`` (alone, when set: a user's explicit
choice is never silently replaced), then ``CC``, the compiler Python was built
with, and ``cc``/``gcc``/``clang`` on PATH. Each is identified from its
predefined macros rather than its ``--version`` banner (which wrappers and
vendors reword), then must build and run a small program with the chosen flags.
"""
from __future__ import annotations

import functools
import os
import platform
import shutil
import struct
import sys
import sysconfig
import tempfile
from typing import Dict, List, Mapping, Optional, Tuple, Union

from ..config import settings
from . import flags
from .isa import host_level, isa_candidates
from .openmp import OpenMPSupport, probe_flags, probe_libmvec, probe_openmp
from .probe import build_probe, run_command
from .detected import DetectorResult
from .toolchain import Toolchain, join_command, split_command, unix_build_env
from ..deferred import get_logger

logger = get_logger(__name__)

NAME = "gcc/clang"

SANITY_PROBE = r"""
#include <math.h>
#include <stdio.h>
int main(void) {
    volatile double x = 0.5;
    printf("%.3f\n", sin(x));
    return 0;
}
"""

INSTALL_HINT = ("install gcc (`sudo apt install gcc`, `sudo dnf install gcc`) or, on macOS, "
                "the Xcode command line tools (`xcode-select --install`)")

# Macros that identify the target architecture, to reject a cross compiler.
_ARCH_MACROS = {"x86_64": "__x86_64__", "amd64": "__x86_64__", "aarch64": "__aarch64__",
                "arm64": "__aarch64__"}


def candidates(environ: Optional[Mapping[str, str]] = None) -> List[Tuple[str, Tuple[str, ...]]]:
    """Compiler commands to try, as ``(origin, argv)`` in order of preference."""
    explicit = settings().cc
    if explicit:
        return [("HETEROSYMNN_CC", tuple(split_command(explicit)))]
    env = os.environ if environ is None else environ
    out: List[Tuple[str, Tuple[str, ...]]] = []
    if env.get("CC"):
        out.append(("CC", tuple(split_command(env["CC"]))))
    built_with = sysconfig.get_config_var("CC")
    if built_with:
        out.append(("the compiler Python was built with", tuple(split_command(built_with))))
    out += [(f"`{name}` on PATH", (name,)) for name in ("cc", "gcc", "clang")]
    return [(origin, argv) for origin, argv in out if argv]


def resolve(argv: Tuple[str, ...]) -> Optional[Tuple[str, ...]]:
    """``argv`` with its program made absolute, or None when it does not exist.

    Symbolic links are *not* resolved: wrappers such as ccache dispatch on the
    name they were called by.
    """
    prog = argv[0]
    if os.path.dirname(prog):
        found = os.path.abspath(prog)
        if not (os.path.isfile(found) and os.access(found, os.X_OK)):
            return None
    else:
        found = shutil.which(prog)
        if found is None:
            return None
        found = os.path.abspath(found)
    return (found,) + tuple(argv[1:])


def _macros(argv: Tuple[str, ...]) -> Tuple[Optional[Dict[str, str]], str]:
    with tempfile.TemporaryDirectory(prefix="heterosymnn-probe-") as tmp:
        empty = os.path.join(tmp, "empty.c")
        open(empty, "w").close()
        result = run_command([*argv, "-dM", "-E", empty], cwd=tmp)
    if not result.ok:
        return None, result.summary()
    macros = {}
    for line in result.output.splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 2 and parts[0] == "#define":
            macros[parts[1]] = parts[2] if len(parts) > 2 else ""
    return macros, ""


def identify(macros: Mapping[str, str]) -> Optional[Tuple[str, str, bool]]:
    """``(family, version, apple)`` from predefined macros, or None."""
    if "__clang__" in macros:
        ver = ".".join(macros.get(k, "0") for k in
                       ("__clang_major__", "__clang_minor__", "__clang_patchlevel__"))
        apple = "__apple_build_version__" in macros
        if apple:
            ver += f"+apple{macros['__apple_build_version__']}"
        return "clang", ver, apple
    if "__GNUC__" in macros:
        ver = ".".join(macros.get(k, "0") for k in
                       ("__GNUC__", "__GNUC_MINOR__", "__GNUC_PATCHLEVEL__"))
        return "gcc", ver, False
    return None


def _target_problem(macros: Mapping[str, str]) -> Optional[str]:
    """Why the compiler's target cannot build modules for this Python, if so."""
    machine = platform.machine().lower()
    want = _ARCH_MACROS.get(machine)
    if want and want not in macros:
        return f"it does not target {machine} (no {want}); is it a cross compiler?"
    size = macros.get("__SIZEOF_POINTER__")
    if size and size.isdigit() and int(size) != struct.calcsize("P"):
        return f"it builds {8 * int(size)}-bit code but Python is {8 * struct.calcsize('P')}-bit"
    return None


def _choose_flags(argv: Tuple[str, ...], family: str, version: str, apple: bool, level: str
                  ) -> Union[str, Tuple[str, Tuple[str, ...], OpenMPSupport]]:
    """``(isa, isa_args, openmp)`` that work, or the last failure's text."""
    candidates_ = isa_candidates(family, level)
    isa, best_args = candidates_[0]
    # Common case in one probe: OpenMP with the best ISA flags builds and runs.
    omp = probe_openmp(argv, version, family, apple, flags.base_args(best_args))
    if omp.available:
        return isa, best_args, omp
    # OpenMP or the ISA flags may be at fault. The first ISA flag set that
    # builds *and runs* a program without OpenMP wins (running proves the
    # linker and C runtime work too); then OpenMP is retried with it.
    failure = ""
    for isa, isa_args in candidates_:
        result = build_probe(argv, SANITY_PROBE, flags.base_args(isa_args), ("-lm",), execute=True)
        if result.ok:
            break
        failure = result.summary()
    else:
        return failure
    if isa_args != best_args:
        omp = probe_openmp(argv, version, family, apple, flags.base_args(isa_args))
    return isa, isa_args, omp


@functools.lru_cache(maxsize=None)
def probe_compiler(argv: Tuple[str, ...], origin: str, level: str) -> DetectorResult:
    """Identify and test one compiler command (cached).

    Parameters
    ----------
    argv : tuple of str
        Compiler command with an absolute program path.
    origin : str
        Where the command came from (for messages).
    level : str
        Instruction-set level to aim for (see :mod:`.isa`).

    Returns
    -------
    DetectorResult
    """
    label = f"{origin} ({join_command(argv)})"
    macros, failure = _macros(argv)
    if macros is None:
        return DetectorResult(NAME, None, f"{label} is not a working C compiler: {failure}")
    ident = identify(macros)
    if ident is None:
        return DetectorResult(NAME, None, f"{label} is neither GCC nor Clang compatible "
                                          "(neither __GNUC__ nor __clang__ is defined)")
    family, version, apple = ident
    problem = _target_problem(macros)
    if problem:
        return DetectorResult(NAME, None, f"{label}: {problem}")

    chosen = _choose_flags(argv, family, version, apple, level)
    if isinstance(chosen, str):
        return DetectorResult(NAME, None, f"{label} cannot build and run a test program: {chosen}")
    isa, isa_args, omp = chosen

    # SIMD pragmas still vectorise without the OpenMP runtime.
    simd = not omp.available and probe_flags(argv, version, flags.OPENMP_SIMD)
    mvec = probe_libmvec(argv, version)
    toolchain = Toolchain(
        name=family, path=join_command(argv), version=version,
        compile_args=flags.unix_compile_args(isa_args, omp.compile_args, simd=simd),
        link_args=flags.unix_link_args(omp.link_args, libmvec=mvec),
        build_env=unix_build_env(argv, platform.machine()),
        openmp=omp.available, isa=isa,
        compiler_type="mingw32" if sys.platform == "win32" else "unix",
    )
    notes = [f"found via {origin}", f"OpenMP {'yes' if omp.available else 'no'}",
             f"libmvec {'yes' if mvec else 'no'}"]
    if not omp.available:
        notes.append(omp.reason)
    logger.debug("usable: %s", toolchain.describe())
    return DetectorResult(NAME, toolchain, "; ".join(notes))


def detect_gcc_clang(family: Optional[str] = None) -> DetectorResult:
    """The first working GCC or Clang.

    Candidates are re-listed on every call (cheap, and it follows the
    environment); probing each one is cached by :func:`probe_compiler`.

    Parameters
    ----------
    family : {"gcc", "clang"}, optional
        Accept only this family (``HETEROSYMNN_TOOLCHAIN``).

    Returns
    -------
    DetectorResult
        Usable, or unusable with every candidate's reason and the fix.
    """
    reasons: List[str] = []
    seen = set()
    for origin, argv in candidates():
        resolved = resolve(argv)
        if resolved is None:
            reasons.append(f"{origin} ({join_command(argv)}): not found or not executable")
            continue
        if resolved in seen:
            continue
        seen.add(resolved)
        result = probe_compiler(resolved, origin, host_level())
        if result.toolchain is not None and family not in (None, result.toolchain.name):
            reasons.append(f"{origin} ({result.toolchain.path}) is {result.toolchain.name}, "
                           f"not {family}")
            continue
        if result.usable:
            return result
        reasons.append(result.reason)
    if settings().cc:
        fix = ("HETEROSYMNN_CC must name a working GCC- or Clang-compatible compiler; "
               "fix it or unset it to let heterosymnn choose")
    elif family == "clang":
        fix = "to fix, install clang (`sudo apt install clang libomp-dev`) or unset HETEROSYMNN_TOOLCHAIN"
    else:
        fix = f"to fix, {INSTALL_HINT}"
    return DetectorResult(NAME, None, "; ".join(reasons + [fix]))


def clear_caches() -> None:
    """Forget probed compilers."""
    probe_compiler.cache_clear()
