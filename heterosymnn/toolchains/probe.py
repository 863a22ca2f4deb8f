"""Running a compiler on a tiny program, isolated and bounded in time.

Detectors believe only what a compiler actually does: a flag is kept when a
probe built with it compiles (and, where it matters, runs). Every probe works
in its own temporary directory with a timeout, so a hung or broken compiler
costs a reason string, never a hang.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from ..config import settings

_MAX_OUTPUT = 4000  # characters of compiler output kept in a reason


@dataclass(frozen=True)
class CommandResult:
    """Outcome of one command.

    ``returncode`` is None when the command could not start or timed out, in
    which case ``output`` says why.
    """

    argv: tuple
    returncode: Optional[int]
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def summary(self) -> str:
        """The command and the tail of its output, for a reason string."""
        text = self.output.strip()
        if len(text) > _MAX_OUTPUT:
            text = "..." + text[-_MAX_OUTPUT:]
        status = "could not run" if self.returncode is None else f"exit status {self.returncode}"
        cmd = " ".join(self.argv)
        return f"`{cmd}` ({status})" + (f":\n{text}" if text else "")


def probe_timeout() -> float:
    """Seconds one probe command may take (the configured build timeout)."""
    return float(settings().build_timeout)


def run_command(argv: Sequence[str], *, timeout: Optional[float] = None,
                env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None) -> CommandResult:
    """Run ``argv``, capturing stdout and stderr together.

    Parameters
    ----------
    argv : sequence of str
        The command.
    timeout : float, optional
        Seconds before the command is killed (default: :func:`probe_timeout`).
    env : mapping, optional
        Complete environment for the command (default: inherited).
    cwd : str, optional
        Working directory of the command.

    Returns
    -------
    CommandResult
    """
    argv = tuple(str(a) for a in argv)
    try:
        proc = subprocess.run(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            timeout=probe_timeout() if timeout is None else timeout,
            env=None if env is None else dict(env), cwd=cwd,
        )
    except subprocess.TimeoutExpired:
        return CommandResult(argv, None, f"timed out after {timeout or probe_timeout():g} s")
    except OSError as exc:
        return CommandResult(argv, None, f"{type(exc).__name__}: {exc}")
    return CommandResult(argv, proc.returncode, proc.stdout.decode("utf-8", errors="replace"))


def build_probe(cc: Sequence[str], source: str, compile_args: Sequence[str] = (),
                link_args: Sequence[str] = (), *, link: bool = True, execute: bool = False,
                env: Optional[Mapping[str, str]] = None) -> CommandResult:
    """Compile ``source`` with a GCC-style driver; optionally link and run it.

    Parameters
    ----------
    cc : sequence of str
        Compiler command (``["gcc"]``, ``["/path/zig", "cc"]``).
    source : str
        C source text.
    compile_args, link_args : sequence of str
        Flags placed before and after the source file.
    link : bool
        Build an executable; otherwise only an object file (``-c``).
    execute : bool
        Run the executable; its output becomes the result's output.
    env : mapping, optional
        Complete environment for the compiler and the program.

    Returns
    -------
    CommandResult
        The first step that failed, or the last step that ran.
    """
    with tempfile.TemporaryDirectory(prefix="heterosymnn-probe-") as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w", encoding="utf-8") as fh:
            fh.write(source)
        if link:
            out = os.path.join(tmp, "probe.exe" if sys.platform == "win32" else "probe")
            argv = [*cc, *compile_args, src, "-o", out, *link_args]
        else:
            out = os.path.join(tmp, "probe.o")
            argv = [*cc, *compile_args, "-c", src, "-o", out]
        result = run_command(argv, env=env, cwd=tmp)
        if not result.ok or not (link and execute):
            return result
        return run_command([out], env=env, cwd=tmp, timeout=min(60.0, probe_timeout()))
