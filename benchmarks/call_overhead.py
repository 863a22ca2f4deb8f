"""Per-call overhead of CPU_JIT on a tiny layer: 32 nodes x batch 1, float32.

Each path calls ``forward_kernel`` / ``backward_kernel`` the way a user would on
a small layer (a NEAT network's step, a control loop) and is reported as a ratio
to one ``np.tanh(z, out=o)`` on an array of the same shape, timed in the same
rounds (the machine may be shared: only ratios measured together mean much).

Paths: arrays that own their memory, with and without ``out=``; ``z`` a reshaped
view; ``z`` a slice of rows of a bigger array; in place (``out is z``, ``out is
grad``). The layer is ``benchmarks/cpu_peers.py``'s (8 formulas interleaved).
Each round times every path once (``--calls`` calls each), interleaved, and the
figure is the median over ``--rounds`` rounds: many short rounds, so that load
from other processes falls on every path alike. Target: every ratio <= 4.

Usage: python benchmarks/call_overhead.py [--rounds N] [--calls N] [--json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from heterosymnn import SymbolicJITCompiler  # noqa: E402

NODES = 32
#: The layer of benchmarks/cpu_peers.py, interleaved: node r uses formula r % 8.
FORMULAS = ["tanh", "sin", "relu", "sigmoid", "softplus", "gaussian", ("a*tanh(b*num)", {"a": 1.5, "b": 0.7}),
            "leaky_relu"]
TARGET = 4.0


def _configs() -> list:
    return [FORMULAS[i % len(FORMULAS)] for i in range(NODES)]


def _paths(comp: SymbolicJITCompiler) -> Dict[str, Callable[[], object]]:
    """name -> one call of that path (arrays made once: only the call is timed)."""
    rng = np.random.default_rng(0)
    dtype = np.float32
    z = rng.normal(size=(NODES, 1)).astype(dtype)   # owns its memory
    grad = rng.normal(size=(NODES, 1)).astype(dtype)
    o = np.empty_like(z)
    view = z.ravel().copy().reshape(NODES, 1)      # a reshaped view: base is not None
    rows = rng.normal(size=(2 * NODES, 1)).astype(dtype)[NODES:]  # a slice of rows: a view
    inplace, inplace_grad = z.copy(), grad.copy()
    fwd, bwd = comp.forward_kernel, comp.backward_kernel
    return {
        "np.tanh(z, out=o)": lambda: np.tanh(z, out=o),
        "fwd out=": lambda: fwd(z, out=o),
        "fwd no out": lambda: fwd(z),
        "fwd z reshaped view, out=": lambda: fwd(view, out=o),
        "fwd z row slice, out=": lambda: fwd(rows, out=o),
        "fwd in place (out is z)": lambda: fwd(inplace, out=inplace),
        "bwd out=": lambda: bwd(z, grad, out=o),
        "bwd no out": lambda: bwd(z, grad),
        "bwd z reshaped view, out=": lambda: bwd(view, grad, out=o),
        "bwd z row slice, out=": lambda: bwd(rows, grad, out=o),
        "bwd in place (out is grad)": lambda: bwd(z, inplace_grad, out=inplace_grad),
    }


def _time(call: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - start) / calls


def measure(rounds: int, calls: int) -> Dict[str, float]:
    """Median seconds per call of every path, over interleaved rounds."""
    comp = SymbolicJITCompiler(_configs(), "CPU_JIT", dtype="float32", strict=True)
    paths = _paths(comp)
    for call in paths.values():  # warm up: first calls allocate and page in
        _time(call, 200)
    samples: Dict[str, List[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, call in paths.items():
            samples[name].append(_time(call, calls))
    return {name: statistics.median(values) for name, values in samples.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=61)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    figures = measure(args.rounds, args.calls)
    reference = figures["np.tanh(z, out=o)"]
    if args.json:
        print(json.dumps({name: {"us": t * 1e6, "ratio": t / reference} for name, t in figures.items()}))
        return
    print(f"32 nodes x batch 1 float32, median of {args.rounds} interleaved rounds of {args.calls} calls")
    print(f"{'path':32s} {'us/call':>8s} {'x np.tanh':>10s}")
    worst = 0.0
    for name, seconds in figures.items():
        ratio = seconds / reference
        if name != "np.tanh(z, out=o)":
            worst = max(worst, ratio)
        print(f"{name:32s} {seconds * 1e6:8.2f} {ratio:10.2f}")
    print(f"worst ratio {worst:.2f} (target <= {TARGET:g}): {'met' if worst <= TARGET else 'NOT met'}")


if __name__ == "__main__":
    main()
