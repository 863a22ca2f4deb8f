"""NVCC, the CUDA toolkit's offline compiler, as a detector like the C ones.

Where it is looked for, in order: ``HETEROSYMNN_NVCC`` (a path or a command
name: an explicit choice that does not work is an error, never a silent
switch), ``CUDA_PATH/bin``, ``CUDA_HOME/bin``, then ``PATH``. A candidate is
usable when ``nvcc --version`` answers; ``nvcc --list-gpu-code`` gives the real
architectures it can build cubins for.

Compiles run in a private temporary directory (nvcc writes intermediate files
next to its output) with a timeout, and never change the caller's working
directory or environment.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from typing import List, Optional, Sequence, Tuple

from ..config import settings
from ..errors import JITCompilationError, ToolchainNotFoundError

NAME = "nvcc"
ENV_NVCC = "HETEROSYMNN_NVCC"
INSTALL_HINT = ("install the CUDA toolkit (https://developer.nvidia.com/cuda-downloads) and put its "
                "bin folder on PATH, or set CUDA_PATH or HETEROSYMNN_NVCC to it")
_PROBE_TIMEOUT = 60.0
_VERSION = re.compile(r"release (\d+)\.(\d+)")


@dataclasses.dataclass(frozen=True)
class Nvcc:
    """A working ``nvcc``.

    Attributes
    ----------
    path : str
        Resolved path of the executable.
    version : (int, int)
        The toolkit release, e.g. ``(13, 0)``.
    build : str
        The full version line (``"V13.0.88"``), part of the cache identity.
    architectures : tuple of str
        Real architectures it builds cubins for (``"sm_75"``, ...).
    """

    path: str
    version: Tuple[int, int]
    build: str
    architectures: Tuple[str, ...]

    @property
    def version_text(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"

    def compile(self, source: str, target: str, options: Sequence[str] = (), *, cubin: bool = True,
                timeout: float = 600.0) -> Tuple[bytes, str]:
        """Compile ``source`` to a cubin for ``target`` (``sm_XY``) or, without ``cubin``, to
        PTX for ``compute_XY``; returns the code and nvcc's output.

        Raises
        ------
        JITCompilationError
            nvcc failed or ran past ``timeout`` seconds (the message carries its output).
        """
        number = target.split("_", 1)[-1]
        kind, arch = ("-cubin", f"sm_{number}") if cubin else ("-ptx", f"compute_{number}")
        with tempfile.TemporaryDirectory(prefix="hs-nvcc-") as workdir:
            src = os.path.join(workdir, "kernels.cu")
            out = os.path.join(workdir, "kernels.cubin" if cubin else "kernels.ptx")
            with open(src, "w", encoding="utf-8") as handle:
                handle.write(source)
            command = [self.path, kind, f"-arch={arch}", *options, "-o", out, src]
            try:
                proc = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired as exc:
                raise JITCompilationError(
                    f"nvcc {self.version_text} did not finish compiling for {arch} within {timeout:.0f} s; "
                    f"raise HETEROSYMNN_BUILD_TIMEOUT", compiler_output=str(exc.output or "")) from None
            log = (proc.stdout + proc.stderr).strip()
            if proc.returncode != 0 or not os.path.isfile(out):
                raise JITCompilationError(f"nvcc {self.version_text} could not compile the CUDA source "
                                          f"for {arch} (exit status {proc.returncode})", compiler_output=log)
            with open(out, "rb") as handle:
                return handle.read(), log


def find_nvcc() -> Nvcc:
    """The nvcc to use (cached per environment); :class:`ToolchainNotFoundError` says why none."""
    return _find(settings().nvcc, os.environ.get("CUDA_PATH") or None,
                 os.environ.get("CUDA_HOME") or None, os.environ.get("PATH", ""))


def clear_cache() -> None:
    """Forget what :func:`find_nvcc` found (after changing the environment)."""
    _find.cache_clear()


@functools.lru_cache(maxsize=8)
def _find(explicit: Optional[str], cuda_path: Optional[str], cuda_home: Optional[str], _path: str) -> Nvcc:
    if explicit:
        resolved = shutil.which(explicit)
        if resolved is None:
            raise ToolchainNotFoundError(f"{ENV_NVCC}={explicit!r} is not an executable nvcc; set it to the "
                                         f"full path of nvcc, or unset it")
        return _probe(resolved)
    reasons: List[str] = []
    for label, candidate in _candidates(cuda_path, cuda_home):
        try:
            return _probe(candidate)
        except ToolchainNotFoundError as exc:
            reasons.append(f"{label}: {exc}")
    if not reasons:
        reasons.append("no nvcc under CUDA_PATH/CUDA_HOME or on PATH")
    raise ToolchainNotFoundError("nvcc not found (" + "; ".join(reasons) + f"); {INSTALL_HINT}")


def _candidates(cuda_path: Optional[str], cuda_home: Optional[str]) -> List[Tuple[str, str]]:
    exe = "nvcc.exe" if sys.platform == "win32" else "nvcc"
    found: List[Tuple[str, str]] = []
    for label, root in (("CUDA_PATH", cuda_path), ("CUDA_HOME", cuda_home)):
        if root:
            path = os.path.join(root, "bin", exe)
            if os.path.isfile(path):
                found.append((label, path))
    on_path = shutil.which("nvcc")
    if on_path:
        found.append(("PATH", on_path))
    unique = {}
    for label, path in found:
        unique.setdefault(os.path.realpath(path), (label, path))
    return list(unique.values())


def _run(path: str, *args: str) -> str:
    try:
        proc = subprocess.run([path, *args], capture_output=True, text=True, timeout=_PROBE_TIMEOUT)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ToolchainNotFoundError(f"{path} {' '.join(args)} failed: {exc}") from None
    if proc.returncode != 0:
        raise ToolchainNotFoundError(f"{path} {' '.join(args)} exited with {proc.returncode}: "
                                     f"{(proc.stderr or proc.stdout).strip()[:200]}")
    return proc.stdout


def _probe(path: str) -> Nvcc:
    text = _run(path, "--version")
    match = _VERSION.search(text)
    if match is None:
        raise ToolchainNotFoundError(f"{path} --version does not name a CUDA release: {text.strip()[:200]}")
    build = next((w for w in text.split() if re.fullmatch(r"V\d+(\.\d+)+", w)), match.group(0))
    try:  # --list-gpu-code appeared in CUDA 11.0; without it the architectures stay unknown
        listed = _run(path, "--list-gpu-code").split()
    except ToolchainNotFoundError:
        listed = []
    archs = sorted({w for w in listed if re.fullmatch(r"sm_\d+[a-z]?", w) and w[-1].isdigit()},
                   key=lambda a: int(a[3:]))
    return Nvcc(os.path.realpath(path), (int(match.group(1)), int(match.group(2))), build, tuple(archs))
