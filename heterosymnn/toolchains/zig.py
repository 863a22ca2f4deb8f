"""Zig's bundled Clang, from the ``ziglang`` wheel: a C compiler anyone can pip install.

It ships its own libc headers and linker, so it works where no system
compiler exists; it has no OpenMP runtime, so kernels run serially. Two of its
habits need care: without an explicit CPU it targets the *build* machine's CPU
(like ``-march=native``, which a shared cache must never get), and without
``-O2`` at link time it builds its runtime libraries unoptimised, which makes
the first link take ~25 s instead of ~3 s.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import platform
import sys
import tempfile
from typing import Mapping, Optional, Sequence, Tuple

from ..errors import JITCompilationError, ToolchainNotFoundError
from . import flags
from .isa import host_level, isa_candidates
from .openmp import probe_flags
from .probe import run_command
from .detected import DetectorResult
from .toolchain import Toolchain, join_command, unix_build_env
from ..deferred import get_logger

logger = get_logger(__name__)

NAME = "zig"
INSTALL_HINT = "`pip install heterosymnn[zig]` (installs the ziglang package)"

CROSS_FLAGS = ("-c", "-Wall", "-Werror", "-std=c99", "-O2")


def find_zig() -> Optional[Tuple[str, ...]]:
    """The command that runs zig from the ``ziglang`` package, or None.

    The bundled executable is called directly (one process instead of two per
    compiler run); ``python -m ziglang`` is the fallback if it is not found.
    """
    spec = importlib.util.find_spec("ziglang")
    if spec is None:
        return None
    names = ("zig.exe", "zig") if sys.platform == "win32" else ("zig",)
    for folder in spec.submodule_search_locations or ():
        for name in names:
            exe = os.path.join(folder, name)
            if os.path.isfile(exe) and os.access(exe, os.X_OK):
                return (os.path.abspath(exe),)
    return (sys.executable, "-m", "ziglang")


def _default_cache_dir(environ: Mapping[str, str]) -> Optional[str]:
    if sys.platform == "win32":
        base = environ.get("LOCALAPPDATA")
        return os.path.join(base, "zig") if base else None
    if environ.get("XDG_CACHE_HOME"):
        return os.path.join(environ["XDG_CACHE_HOME"], "zig")
    home = environ.get("HOME")
    return os.path.join(home, ".cache", "zig") if home else None


def _writable(path: str) -> bool:
    # The directory may not exist yet: what counts is its nearest ancestor.
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent
    return os.path.isdir(path) and os.access(path, os.W_OK)


def zig_cache_env(environ: Optional[Mapping[str, str]] = None) -> Tuple[Tuple[str, str], ...]:
    """Cache-directory variables zig needs, if its default cannot be written.

    Zig keeps its compiled runtime libraries in a global cache; when the user
    has not chosen one and the default (under the home directory) is not
    writable (containers, CI sandboxes), a per-user folder in the temporary
    directory is used instead.
    """
    env = os.environ if environ is None else environ
    if env.get("ZIG_GLOBAL_CACHE_DIR"):
        return ()
    default = _default_cache_dir(env)
    if default and _writable(default):
        return ()
    user = str(os.getuid()) if hasattr(os, "getuid") else env.get("USERNAME", "user")
    folder = os.path.join(tempfile.gettempdir(), f"heterosymnn-zig-{user}")
    logger.info("zig cache %s is not writable; using %s", default, folder)
    return (("ZIG_GLOBAL_CACHE_DIR", folder), ("ZIG_LOCAL_CACHE_DIR", folder))


@functools.lru_cache(maxsize=None)
def detect_zig() -> DetectorResult:
    """Zig from the ``ziglang`` package, with flags it accepts (cached).

    Returns
    -------
    DetectorResult
        Usable (``openmp=False``), or unusable with the reason and the fix.
    """
    zig = find_zig()
    if zig is None:
        return DetectorResult(NAME, None, f"the ziglang package is not installed; to fix, {INSTALL_HINT}")
    cache_env = zig_cache_env()
    environ = {**os.environ, **dict(cache_env)}
    result = run_command([*zig, "version"], env=environ)
    if not result.ok or not result.output.strip():
        return DetectorResult(NAME, None, f"zig does not run: {result.summary()}; to fix, "
                                          "reinstall it (`pip install --force-reinstall ziglang`)")
    version = result.output.strip().splitlines()[-1]
    cc = zig + ("cc",)
    for isa, isa_args in isa_candidates("zig", host_level()):
        if probe_flags(cc, version, flags.base_args(isa_args), cache_env):
            break
    else:
        return DetectorResult(NAME, None, f"zig {version} rejects every CPU level tried "
                                          f"(see `{join_command(cc)} -mcpu=...`)")
    simd = probe_flags(cc, version, flags.OPENMP_SIMD, cache_env)
    toolchain = Toolchain(
        name=NAME, path=join_command(zig), version=version,
        compile_args=flags.unix_compile_args(isa_args, simd=simd),
        link_args=flags.zig_link_args(isa_args),
        build_env=tuple(sorted(unix_build_env(cc, platform.machine()) + cache_env)),
        openmp=False, isa=isa,
        compiler_type="mingw32" if sys.platform == "win32" else "unix",
    )
    return DetectorResult(NAME, toolchain, "no OpenMP runtime in zig: kernels run serially")


def zig_cross_compile_check(source: str, target: str = "x86_64-windows-gnu",
                            extra_args: Sequence[str] = ()) -> None:
    """Compile C source for another platform with zig, to catch portability breaks.

    Runs ``zig cc -target <target> -c -Wall -Werror -std=c99 -O2`` on the source
    (object file only, nothing is linked). Meant for plain C: cffi's generated
    wrapper includes ``Python.h``, whose target headers are not available.

    Parameters
    ----------
    source : str
        C source text.
    target : str
        Zig target triple, default ``x86_64-windows-gnu``.
    extra_args : sequence of str
        More compiler flags (e.g. ``-fopenmp`` or ``-D...``).

    Raises
    ------
    ToolchainNotFoundError
        When the ziglang package is not installed.
    JITCompilationError
        When the compiler rejects the source; carries its output and the path
        of the kept source file.
    """
    zig = find_zig()
    if zig is None:
        raise ToolchainNotFoundError(f"zig is needed for a cross-compile check; {INSTALL_HINT}")
    environ = {**os.environ, **dict(zig_cache_env())}
    tmp = tempfile.mkdtemp(prefix="heterosymnn-cross-")
    src = os.path.join(tmp, "check.c")
    with open(src, "w", encoding="utf-8") as fh:
        fh.write(source)
    argv = [*zig, "cc", "-target", target, *CROSS_FLAGS, *extra_args, src,
            "-o", os.path.join(tmp, "check.o")]
    result = run_command(argv, env=environ, cwd=tmp)
    if not result.ok:
        # The source stays on disk for the error message; success cleans up.
        raise JITCompilationError(f"C source does not compile for {target}",
                                  compiler_output=result.summary(), source_path=src)
    for name in os.listdir(tmp):
        os.remove(os.path.join(tmp, name))
    os.rmdir(tmp)
