"""CPU_JIT code run in separate processes by the tests: ``python cpu_jit_worker.py MODE LAYER DTYPE ...``.

Modes
-----
run LAYER DTYPE                    construct the layer on CPU_JIT (strict), call it, print one JSON line
race LAYER DTYPE READY_DIR GO      say ready in READY_DIR, wait for the file GO, then as ``run``

The JSON line holds the forward and backward results on :func:`inputs`, the
cache statistics, whether SymPy got imported, and every warning raised.

Also imported by the tests (for ``LAYERS`` and :func:`inputs`) and by
``ProcessPoolExecutor`` workers (:func:`apply_pickled`); importing it imports
NumPy only, never heterosymnn or SymPy.
"""
from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

RESULT_MARKER = "RESULT "

# Layers shared by the tests and their worker processes (plain data only).
LAYERS = {
    # Three structures, constants on one of them.
    "small": ["relu", ("a*sin(w*num) + b", {"a": 1.5, "w": 2.0, "b": -0.25}), "tanh", "relu",
              ("a*sin(w*num) + b", {"a": -2.0, "w": 0.5, "b": 1.0})],
    # Eight structures interleaved over 24 nodes (the race), constants varying per node.
    "eight": [
        cfg
        for i in range(3)
        for cfg in (
            "relu",
            ("a*sin(w*num)", {"a": 1.0 + i, "w": 1.0 + i}),
            "tanh",
            ("leaky_relu", {"alpha": 0.01 * (i + 1)}),
            "gelu",
            ("a*tanh(b*num) + c", {"a": 0.5, "b": -0.25 * i, "c": float(i)}),
            "swish",
            "exp(-num**2)",
        )
    ],
    # Structures no other test layer uses (the SIGKILL test needs a build that is really new).
    "kill": ["atan(num)*cosh(num/9)", ("k*log(1 + num**2)", {"k": 0.5}), "num**5 - num**3",
             "erf(num/2)*num"],
}


def inputs(n_nodes: int, dtype: str, cols: int = 9):
    """Deterministic ``(z, grad)`` of shape ``(n_nodes, cols)`` with special values in the last columns."""
    z = np.linspace(-3.0, 3.0, n_nodes * cols).reshape(n_nodes, cols)
    z[:, -3:] = [0.0, -0.0, np.nan]
    z[0, -4], z[-1, -4] = np.inf, -np.inf
    grad = np.linspace(-1.5, 2.0, n_nodes * cols).reshape(n_nodes, cols)
    return z.astype(dtype), grad.astype(dtype)


# Modules only building needs: a warm process must not pay for importing them. ``logging``
# (heterosymnn.deferred), ``random`` (lock back-off) and ``sysconfig`` (the ABI tag reads
# importlib.machinery) cost a warm start ~1.5-4 ms each and are not needed there either.
BUILD_ONLY_MODULES = ("sympy", "subprocess", "concurrent.futures", "heterosymnn.backends.cffi_build",
                      "heterosymnn.codegen.c_source", "heterosymnn.toolchains.select",
                      "heterosymnn.toolchains.gcc_clang", "heterosymnn.toolchains.msvc", "heterosymnn.toolchains.zig",
                      "heterosymnn.cache.manage", "tarfile", "logging", "random", "sysconfig")


def _run(layer: str, dtype: str) -> dict:
    from heterosymnn import SymbolicJITCompiler
    from heterosymnn import cache

    configs = LAYERS[layer]
    z, grad = inputs(len(configs), dtype)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        comp = SymbolicJITCompiler(configs, "CPU_JIT", dtype=dtype, strict=True)
        seconds = time.perf_counter() - start
        forward = comp.forward_kernel(z)
        backward = comp.backward_kernel(z, grad)
    return {
        "pid": os.getpid(),
        "method": comp.calculation_method,
        "sympy_imported": "sympy" in sys.modules,
        "build_only_imported": [name for name in BUILD_ONLY_MODULES if name in sys.modules],
        "stats": cache.stats().as_dict(),
        "construct_seconds": seconds,
        "forward": forward.astype(np.float64).tolist(),
        "backward": backward.astype(np.float64).tolist(),
        "warnings": [[w.category.__name__, str(w.message)] for w in caught],
    }


def _wait_for(path: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.002)


def apply_pickled(comp, z, grad):
    """Run a compiler that was pickled into this (pool worker) process; report what it did."""
    from heterosymnn import cache

    return {
        "pid": os.getpid(),
        "method": comp.calculation_method,
        "constants": comp.constants,
        "forward": comp.forward_kernel(z),
        "backward": comp.backward_kernel(z, grad),
        "stats": cache.stats().as_dict(),
        "sympy_imported": "sympy" in sys.modules,
    }


def main(mode: str, layer: str, dtype: str, *args: str) -> None:
    if mode == "race":
        ready_dir, go = Path(args[0]), Path(args[1])
        (ready_dir / str(os.getpid())).touch()
        _wait_for(go)  # every process starts building at once, after its imports
    elif mode != "run":
        raise SystemExit(f"unknown mode {mode!r}")
    result = _run(layer, dtype)
    sys.stdout.write(RESULT_MARKER + json.dumps(result) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
