"""Microsoft Visual C++ on Windows: vswhere -> vcvarsall -> captured environment.

The steps follow setuptools' own MSVC discovery (same vswhere query, same
``cmd /u /c "vcvarsall.bat" <arch> && set`` capture, same ``DISTUTILS_USE_SDK``
convention), with two differences that matter here: the environment is
captured once per process instead of once per build, and every step takes its
environment and command runner as arguments so the logic can be exercised
against a simulated installation on machines that are not Windows.

The build child gets the captured environment plus ``DISTUTILS_USE_SDK=1``,
which makes setuptools use it as is instead of running vcvarsall again.
"""
from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import sysconfig
from typing import Callable, Dict, Mapping, Optional, Tuple

from . import flags
from .isa import host_level, isa_candidates
from .probe import probe_timeout
from .detected import DetectorResult
from .toolchain import Toolchain
from ..deferred import get_logger

logger = get_logger(__name__)

NAME = "msvc"
INSTALL_HINT = ("install Visual Studio Build Tools with the \"Desktop development with C++\" "
                "workload (https://visualstudio.microsoft.com/visual-cpp-build-tools/)")

# vcvarsall argument and the vswhere component that provides it, per Python platform.
_ARCHES = {
    "win-amd64": ("x64", "Microsoft.VisualStudio.Component.VC.Tools.x86.x64"),
    "win32": ("x86", "Microsoft.VisualStudio.Component.VC.Tools.x86.x64"),
    "win-arm64": ("arm64", "Microsoft.VisualStudio.Component.VC.Tools.ARM64"),
}
_ISA_LEVEL = {"x64": None, "x86": "generic", "arm64": "armv8-a"}

Runner = Callable[..., "subprocess.CompletedProcess[bytes]"]
"""``run(args, *, env=None, timeout=None) -> CompletedProcess`` with bytes output;
``args`` is a list, or a string for the ``cmd`` command line."""


def default_run(args, *, env: Optional[Mapping[str, str]] = None,
                timeout: Optional[float] = None) -> "subprocess.CompletedProcess[bytes]":
    """Run a command, capturing bytes stdout and stderr (the default runner)."""
    return subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          stdin=subprocess.DEVNULL, env=None if env is None else dict(env),
                          timeout=timeout)


class _Unusable(Exception):
    """Internal: a step failed; the message is the detector's reason."""


def vswhere_path(environ: Mapping[str, str]) -> str:
    """Where the Visual Studio Installer keeps vswhere.exe (``environ`` upper-cased)."""
    root = environ.get("PROGRAMFILES(X86)") or environ.get("PROGRAMFILES")
    if not root:
        raise _Unusable("neither ProgramFiles(x86) nor ProgramFiles is set")
    return os.path.join(root, "Microsoft Visual Studio", "Installer", "vswhere.exe")


def find_installation(environ: Mapping[str, str], run: Runner, component: str) -> Dict[str, str]:
    """The newest Visual Studio installation with ``component``, as vswhere reports it."""
    vswhere = vswhere_path(environ)
    if not os.path.isfile(vswhere):
        raise _Unusable(f"Visual Studio Installer not found ({vswhere}); to fix, {INSTALL_HINT}")
    args = [vswhere, "-latest", "-prerelease", "-products", "*", "-requires", component,
            "-format", "json", "-utf8"]
    try:
        proc = run(args, timeout=probe_timeout())
        installs = json.loads(proc.stdout.decode("utf-8", errors="replace") or "[]")
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise _Unusable(f"vswhere failed ({vswhere}): {exc}") from None
    if proc.returncode != 0 or not isinstance(installs, list):
        raise _Unusable(f"vswhere failed ({vswhere}, exit status {proc.returncode})")
    if not installs:
        raise _Unusable(f"no Visual Studio installation has the C++ build tools ({component}); "
                        f"to fix, {INSTALL_HINT}")
    return installs[0]


@functools.lru_cache(maxsize=None)
def capture_vc_env(vcvarsall: str, arch: str, run: Runner = default_run) -> Tuple[Tuple[str, str], ...]:
    """The environment ``vcvarsall.bat <arch>`` sets up, captured once (cached).

    Names are upper-cased: Windows treats them case-insensitively, and one
    spelling keeps lookups and the cache identity simple.
    """
    command = f'cmd /u /c "{vcvarsall}" {arch} && set'
    try:
        proc = run(command, timeout=probe_timeout())
    except (OSError, subprocess.SubprocessError) as exc:
        raise _Unusable(f"running vcvarsall.bat failed: {exc}") from None
    # `cmd /u` writes UTF-16LE, as setuptools expects too.
    out = proc.stdout.decode("utf-16le", errors="replace")
    if proc.returncode != 0:
        err = (proc.stderr or b"").decode("utf-8", errors="replace")
        raise _Unusable(f"`{command}` failed (exit status {proc.returncode}): "
                        f"{(out + err).strip()[-2000:]}")
    env = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        if key and value:
            env[key.strip().upper()] = value
    return tuple(sorted(env.items()))


def find_cl(env: Mapping[str, str]) -> Optional[str]:
    """cl.exe on the PATH of a captured (Windows) environment."""
    for folder in env.get("PATH", "").split(";"):
        exe = os.path.join(folder, "cl.exe")
        if folder and os.path.isfile(exe):
            return exe
    return None


def cl_version(cl: str, env: Mapping[str, str], run: Runner) -> str:
    """Version from cl.exe's banner (``... Version 19.38.33130 for x64``)."""
    try:
        proc = run([cl], env=dict(env), timeout=probe_timeout())
        text = (proc.stdout + proc.stderr).decode("utf-8", errors="replace")
    except (OSError, subprocess.SubprocessError):
        text = ""
    match = re.search(r"(\d+\.\d+\.\d+(?:\.\d+)?)", text)
    if match:
        return match.group(1)
    return env.get("VCTOOLSVERSION", "unknown")


def _vc_environment(environ: Mapping[str, str], run: Runner, arch: str, component: str
                    ) -> Dict[str, str]:
    if environ.get("DISTUTILS_USE_SDK") and environ.get("MSSDK"):
        # Already inside a developer prompt: use it as is, as setuptools does.
        return dict(environ)
    install = find_installation(environ, run, component)
    root = install.get("installationPath", "")
    vcvarsall = os.path.join(root, "VC", "Auxiliary", "Build", "vcvarsall.bat")
    if not os.path.isfile(vcvarsall):
        raise _Unusable(f"{vcvarsall} not found in the Visual Studio installation at {root}; "
                        f"to fix, repair it or {INSTALL_HINT}")
    return dict(capture_vc_env(vcvarsall, arch, run))


def detect_msvc_in(environ: Mapping[str, str], run: Runner = default_run,
                   python_platform: Optional[str] = None, level: Optional[str] = None
                   ) -> DetectorResult:
    """Detect MSVC from an explicit environment and command runner.

    Parameters
    ----------
    environ : mapping
        Environment to read (``ProgramFiles(x86)``, ``DISTUTILS_USE_SDK``...).
    run : callable
        Command runner, see :data:`Runner`.
    python_platform : str, optional
        ``sysconfig.get_platform()`` of the Python to build for (default: this
        one, or ``win-amd64`` when it is not Windows).
    level : str, optional
        Instruction-set level (default: the running CPU's).

    Returns
    -------
    DetectorResult
    """
    # Windows variable names are case-insensitive; upper-case them once.
    environ = {k.upper(): v for k, v in environ.items()}
    plat = python_platform or sysconfig.get_platform()
    arch, component = _ARCHES.get(plat, _ARCHES["win-amd64"])
    try:
        env = _vc_environment(environ, run, arch, component)
    except _Unusable as exc:
        return DetectorResult(NAME, None, str(exc))
    cl = find_cl(env)
    if cl is None:
        return DetectorResult(NAME, None, f"vcvarsall.bat {arch} did not put cl.exe on PATH; "
                                          f"to fix, {INSTALL_HINT}")
    version = cl_version(cl, env, run)
    isa, isa_args = isa_candidates("msvc", _ISA_LEVEL[arch] or level or host_level())[0]
    env.update({"DISTUTILS_USE_SDK": "1", "MSSDK": "1"})
    toolchain = Toolchain(
        name=NAME, path=cl, version=version,
        compile_args=flags.msvc_compile_args(isa_args), link_args=(),
        build_env=tuple(sorted(env.items())), openmp=True, isa=isa, compiler_type="msvc",
    )
    logger.debug("usable: %s", toolchain.describe())
    return DetectorResult(NAME, toolchain, f"Visual C++ {version} ({arch})")


@functools.lru_cache(maxsize=None)
def detect_msvc() -> DetectorResult:
    """MSVC for this process (cached); unusable everywhere but Windows."""
    if sys.platform != "win32":
        return DetectorResult(NAME, None, "MSVC is only used on Windows")
    return detect_msvc_in(dict(os.environ))


def clear_caches() -> None:
    """Forget the detection and the captured vcvarsall environments."""
    detect_msvc.cache_clear()
    capture_vc_env.cache_clear()
