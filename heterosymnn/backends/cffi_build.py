"""Build a cffi extension module in a child process, with a timeout.

The caller's working directory and environment never change (cffi's
``compile()`` would change both), several threads may build at once, and the
compiler's own messages reach the user in a ``JITCompilationError``.
"""
from __future__ import annotations

import dataclasses
import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping, Optional, Tuple

from ..errors import JITCompilationError
from ..deferred import get_logger

log = get_logger(__name__)
CHILD_SCRIPT = Path(__file__).with_name("_cffi_child.py")
ARTIFACT_MARKER = "HETEROSYMNN-ARTIFACT "


@dataclasses.dataclass(frozen=True)
class BuildRequest:
    module_name: str
    source: str
    cdef: str
    compile_args: Tuple[str, ...] = ()
    link_args: Tuple[str, ...] = ()
    libraries: Tuple[str, ...] = ()
    env: Tuple[Tuple[str, str], ...] = ()
    """Variables the child needs to pick the toolchain (CC, LDSHARED, MSVC's INCLUDE/LIB...)."""
    compiler_type: str = "unix"
    """setuptools' compiler class; "mingw32" makes GCC-like compilers work on Windows."""


@dataclasses.dataclass(frozen=True)
class BuildResult:
    artifact: Path
    seconds: float
    output: str


def build_extension(request: BuildRequest, workdir: Path, timeout: float,
                    keep_failed_source: Optional[Path] = None) -> BuildResult:
    """Compile ``request`` inside ``workdir``; return the built extension's path.

    Raises
    ------
    JITCompilationError
        The compiler failed or timed out; carries its output and the path of
        the kept source (``keep_failed_source`` when given).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    spec = dataclasses.asdict(request)
    spec.update(module=request.module_name, workdir=str(workdir))
    spec_path = workdir / "build-spec.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    if request.compiler_type != "unix":
        # cffi runs setuptools inside workdir, which reads setup.cfg from there.
        (workdir / "setup.cfg").write_text(f"[build_ext]\ncompiler = {request.compiler_type}\n")
    env = _child_environment(dict(request.env))
    start = time.perf_counter()
    try:
        completed = subprocess.run(
            [sys.executable, str(CHILD_SCRIPT), str(spec_path)], cwd=str(workdir), env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            timeout=timeout, text=True, errors="replace",
        )
    except subprocess.TimeoutExpired as exc:
        output = exc.output if isinstance(exc.output, str) else (exc.output or b"").decode(errors="replace")
        kept = _keep_source(request, keep_failed_source)
        raise JITCompilationError(
            f"building {request.module_name} took longer than {timeout:.0f} s and was stopped; "
            f"raise HETEROSYMNN_BUILD_TIMEOUT if the machine is just slow", output, kept) from None
    seconds = time.perf_counter() - start
    output = completed.stdout or ""
    artifact = _artifact_path(output)
    if completed.returncode != 0 or artifact is None or not artifact.exists():
        disk_full = _disk_error(output, workdir)
        if disk_full is not None:
            raise disk_full
        kept = _keep_source(request, keep_failed_source)
        raise JITCompilationError(
            f"the C compiler failed to build {request.module_name} (exit status {completed.returncode})",
            _compiler_lines(output), kept)
    log.debug("built %s in %.2f s", request.module_name, seconds)
    return BuildResult(artifact=artifact, seconds=seconds, output=output)


def _child_environment(extra: Mapping[str, str]) -> dict:
    env = dict(os.environ)
    env.update(extra)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    # distutils would otherwise add the user's CFLAGS to every build; the toolchain's
    # flags are complete and part of the cache key, so foreign ones must not leak in.
    for name in ("CFLAGS", "CPPFLAGS", "LDFLAGS"):
        if name not in extra:
            env.pop(name, None)
    return env


def _artifact_path(output: str) -> Optional[Path]:
    for line in reversed(output.splitlines()):
        if line.startswith(ARTIFACT_MARKER):
            return Path(json.loads(line[len(ARTIFACT_MARKER):]))
    return None


def _disk_error(output: str, workdir: Path) -> Optional[OSError]:
    """The compiler's failure as the ``OSError`` it is when it could not write its files.

    A full or read-only disk is no fault of the generated code: as an
    ``OSError`` with its errno, the cache moves to a usable directory (or says
    which disk to free) instead of reporting a compiler bug.
    """
    for line in output.splitlines():
        for code, phrases in _DISK_PHRASES:
            if any(phrase in line.lower() for phrase in phrases):
                return OSError(code, f"{os.strerror(code)}: the compiler could not write its output "
                                     f"({line.strip()[:160]})", str(workdir))
    return None


_DISK_PHRASES = tuple((code, phrases) for code, phrases in (
    (errno.ENOSPC, ("no space left on device", "not enough space on the disk")),
    (getattr(errno, "EDQUOT", None), ("disk quota exceeded",)),
    (errno.EROFS, ("read-only file system",)),
) if code is not None)


def _compiler_lines(output: str, limit: int = 60) -> str:
    """The compiler's messages, without the Python traceback of the build child."""
    lines = [line for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower() or "warning" in line.lower()]
    chosen = errors or lines
    return "\n".join(chosen[:limit])


def _keep_source(request: BuildRequest, target: Optional[Path]) -> Optional[str]:
    if target is None:
        return None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(request.source, encoding="utf-8")
        return str(target)
    except OSError:
        return None
