"""A CPU_JIT layer built in its own process, optionally with a fault at one build step.

``python fault_worker.py LAYER [STEP ACTION SIGNAL_DIR]`` constructs ``LAYERS[LAYER]`` on CPU_JIT
(float64, strict), calls both kernels on :func:`inputs` and prints one ``RESULT {json}`` line:
results, cache statistics, the backend used and every warning raised.

The steps of the build of the layer's row-function module, in order:

``source``    the generated source is in the private build directory; no compiler has started
``compiler``  the compiler's child process is running
``artifact``  the compiled module is in the build directory; ``meta.json`` is not written
``metadata``  ``meta.json`` is written; the directory is not published
``publish``   the entry is published; the build log and the structure records are not written

Actions: ``pause`` writes ``SIGNAL_DIR/STEP`` (holding the compiler's pid at the compiler step)
and sleeps, so that the test can SIGKILL this process at exactly that step; ``enospc`` makes the
step fail the way a full disk does (the compiler's own words for the steps it runs).

The hooks wrap the library's step functions from outside; the tests install the same ones in
their own process with :func:`inject` and ``monkeypatch.setattr``. Importing this module imports
NumPy only.
"""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

RESULT_MARKER = "RESULT "
STEPS = ("source", "compiler", "artifact", "metadata", "publish")
ROWS_MODULE = "_hsnn_rows"  # the module of row functions; the runtime module is left alone

# Two structures that no other test layer uses, one of them with a constant.
LAYERS = {
    "pair": ["atan(num)*cosh(num/9)", ("k*log(1 + num**2)", {"k": 0.5})],
    "pair+1": ["atan(num)*cosh(num/9)", ("k*log(1 + num**2)", {"k": -2.0}), "num**5 - sinh(num/3)"],
}

# What a build child prints when its disk is full, by the step that hits it: cffi writing the
# C file, the assembler writing the object file, the linker writing the module.
DISK_FULL_OUTPUT = {
    "source": "OSError: [Errno 28] No space left on device: '{workdir}/_hsnn_rows.c'",
    "compiler": "{{/tmp/ccx.s}}: Assembler messages:\nFatal error: can't write 26 bytes to section .text "
                "of {workdir}/_hsnn_rows.o: 'No space left on device'",
    "artifact": "/usr/bin/ld: final link failed: No space left on device\n"
                "collect2: error: ld returned 1 exit status",
}


def inputs(n_nodes: int, dtype: str = "float64", cols: int = 7):
    """Deterministic ``(z, grad)`` with a zero, a NaN and infinities among ordinary values."""
    z = np.linspace(-3.0, 3.0, n_nodes * cols).reshape(n_nodes, cols)
    z[:, -2:] = [0.0, np.nan]
    z[0, -3], z[-1, -3] = np.inf, -np.inf
    grad = np.linspace(-1.5, 2.0, n_nodes * cols).reshape(n_nodes, cols)
    return z.astype(dtype), grad.astype(dtype)


# -- the hooks ------------------------------------------------------------------------------------
def inject(step: str, action: str, signal_dir: Optional[Path] = None, only_under: Optional[Path] = None,
           setattr: Callable[[Any, str, Any], None] = setattr) -> None:
    """Make ``step`` of every row-module build pause or fail with ENOSPC.

    ``only_under``: only builds inside this directory are hit (the configured cache), so a
    fallback directory works; ``None`` hits every build (a disk full everywhere).
    """
    from heterosymnn.backends import cffi_build
    from heterosymnn.cache import entry, publish

    if step not in STEPS or action not in ("pause", "enospc"):
        raise ValueError(f"unknown fault {step} {action}")

    def hit(path: Any) -> bool:
        return only_under is None or os.path.abspath(os.fspath(path)).startswith(os.fspath(only_under))

    def act(path: Any, note: str = "") -> None:
        if action == "pause":
            _pause(signal_dir, step, note)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(path))

    pause = action == "pause"
    if step in ("source", "compiler") or (step == "artifact" and not pause):
        setattr(cffi_build, "subprocess", _CompilerRuns(step, action, signal_dir, hit))
    elif step == "artifact":
        real_seal = publish.seal

        def pause_before_seal(build_dir, key, metadata, seconds):
            if _is_rows(metadata) and hit(build_dir):
                act(build_dir)
            return real_seal(build_dir, key, metadata, seconds)

        setattr(publish, "seal", pause_before_seal)
    elif step == "metadata" and pause:
        real_seal = publish.seal

        def pause_after_seal(build_dir, key, metadata, seconds):
            meta = real_seal(build_dir, key, metadata, seconds)
            if _is_rows(metadata) and hit(build_dir):
                act(build_dir)
            return meta

        setattr(publish, "seal", pause_after_seal)
    elif step == "metadata":
        real_write = entry.write_file

        def write_half_then_fail(path, data):
            if path.name == "meta.json" and _is_rows(json.loads(data)) and hit(path):
                real_write(path, data[: len(data) // 2])  # what a full disk leaves: a cut file
                act(path)
            real_write(path, data)

        setattr(entry, "write_file", write_half_then_fail)
    elif pause:  # publish
        real_rename = publish._rename

        def pause_after_rename(layout, build_dir, key, meta):
            result = real_rename(layout, build_dir, key, meta)
            if _is_rows(meta) and hit(result[0]):
                act(result[0])
            return result

        setattr(publish, "_rename", pause_after_rename)
    else:  # publish, enospc: the rename into entries/ fails
        real_replace = os.replace

        def replace(src, dst, *args, **kwargs):
            if os.path.isdir(src) and hit(dst) and any(n.startswith(ROWS_MODULE) for n in os.listdir(src)):
                act(dst)
            return real_replace(src, dst, *args, **kwargs)

        setattr(os, "replace", replace)


def _is_rows(metadata: Any) -> bool:
    return isinstance(metadata, dict) and metadata.get("kind") == "c-module"


def _pause(signal_dir: Optional[Path], step: str, note: str = "") -> None:
    marker = Path(signal_dir) / step
    partial = marker.with_suffix(".partial")
    partial.write_text(note)
    os.replace(partial, marker)  # the test sees the whole note or nothing
    time.sleep(600)  # the test kills this process meanwhile
    raise SystemExit("the test never killed the paused worker")


class _CompilerRuns:
    """Stands in for the ``subprocess`` module inside ``cffi_build``, for row-module builds."""

    TimeoutExpired = subprocess.TimeoutExpired
    DEVNULL, PIPE, STDOUT = subprocess.DEVNULL, subprocess.PIPE, subprocess.STDOUT

    def __init__(self, step: str, action: str, signal_dir: Optional[Path], hit: Callable[[Any], bool]):
        self.step, self.action, self.signal_dir, self.hit = step, action, signal_dir, hit

    def run(self, args, cwd=None, **kwargs):
        spec = json.loads(Path(args[-1]).read_text(encoding="utf-8"))
        if not (spec["module"].startswith(ROWS_MODULE) and self.hit(cwd)):
            return subprocess.run(args, cwd=cwd, **kwargs)
        if self.action == "enospc":
            output = DISK_FULL_OUTPUT[self.step].format(workdir=cwd)
            return subprocess.CompletedProcess(args, 1, stdout=output + "\n")
        if self.step == "source":
            _pause(self.signal_dir, self.step)
        timeout = kwargs.pop("timeout", None)
        kwargs.pop("check", None)
        with subprocess.Popen(args, cwd=cwd, **kwargs) as child:
            marker = Path(self.signal_dir) / self.step
            partial = marker.with_suffix(".partial")
            partial.write_text(str(child.pid))
            os.replace(partial, marker)
            out, _ = child.communicate(timeout=timeout)  # the test kills this process meanwhile
        return subprocess.CompletedProcess(args, child.returncode, stdout=out)


# -- the worker -----------------------------------------------------------------------------------
def run(layer: str) -> dict:
    from heterosymnn import SymbolicJITCompiler, cache

    configs = LAYERS[layer]
    z, grad = inputs(len(configs))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        comp = SymbolicJITCompiler(configs, "CPU_JIT", dtype="float64", strict=True)
        forward, backward = comp.forward_kernel(z), comp.backward_kernel(z, grad)
    return {
        "pid": os.getpid(),
        "method": comp.calculation_method,
        "stats": cache.stats().as_dict(),
        "forward": forward.tolist(),
        "backward": backward.tolist(),
        "warnings": [[w.category.__name__, str(w.message)] for w in caught],
    }


def main(layer: str, *fault: str) -> None:
    if fault:
        step, action, signal_dir = fault
        inject(step, action, Path(signal_dir))
    sys.stdout.write(RESULT_MARKER + json.dumps(run(layer)) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
