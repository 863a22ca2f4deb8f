"""CPU_JIT: the features-last layout and the constants' gradient, against the plain calls.

Workload: 8 mixed formulas with constants, row (or column) r using formula r % 8.
Prints the median time per call (and ns/element) of interleaved runs, each
timed call right after an untimed one of itself (``cpu_peers.timed``):

* forward and backward, nodes first ``(n_nodes, batch)`` against features last
  ``(batch, n_nodes)`` (the same values transposed), and their ratio;
* backward with ``constants_grad`` against without, in both layouts.

Usage: python benchmarks/features_last.py [--repeats N] [--shape NODESxBATCH ...] [--threads N]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from cpu_peers import timed  # noqa: E402

CONFIGS = [
    ("a*sin(w*num) + b", {"a": 1.5, "w": 3.0, "b": -0.25}),
    ("leaky_relu", {"alpha": 0.2}),
    ("elu", {"alpha": 1.3}),
    ("swish", {"beta": 1.7}),
    ("a*tanh(b*num)", {"a": 0.7, "b": 1.9}),
    ("Max(num, c)", {"c": 0.3}),
    ("exp(-(num - m)**2/(2*s**2))", {"m": 0.2, "s": 0.8}),
    ("log1p(exp(k*num))/k", {"k": 2.0}),
]


def measure(nodes: int, batch: int, dtype: str, repeats: int) -> None:
    from heterosymnn import SymbolicJITCompiler

    jit = SymbolicJITCompiler([CONFIGS[r % 8] for r in range(nodes)], "CPU_JIT", dtype=dtype, strict=True)
    rng = np.random.default_rng(0)
    z = (rng.standard_normal((nodes, batch)) * 2).astype(dtype)
    g = rng.standard_normal((nodes, batch)).astype(dtype)
    zt, gt = np.ascontiguousarray(z.T), np.ascontiguousarray(g.T)
    out, out_t = np.empty_like(z), np.empty_like(zt)
    cg, cg_t = np.empty(len(jit.constant_names)), np.empty(len(jit.constant_names))
    calls = {
        "fwd nodes-first": lambda: jit.forward_kernel(z, out),
        "fwd features-last": lambda: jit.forward_kernel(zt, out_t, features_last=True),
        "bwd nodes-first": lambda: jit.backward_kernel(z, g, out),
        "bwd features-last": lambda: jit.backward_kernel(zt, gt, out_t, features_last=True),
        "bwd+cg nodes-first": lambda: jit.backward_kernel(z, g, out, constants_grad=cg),
        "bwd+cg features-last": lambda: jit.backward_kernel(zt, gt, out_t, constants_grad=cg_t, features_last=True),
    }
    medians = timed(calls, repeats)
    print(f"{dtype} {nodes}x{batch}, {jit.calculation_method}:")
    for name, seconds in medians.items():
        print(f"  {name:22s} {seconds * 1e6:9.1f} us  {seconds / z.size * 1e9:6.3f} ns/element")
    ratio = {
        "features-last / nodes-first, fwd": medians["fwd features-last"] / medians["fwd nodes-first"],
        "features-last / nodes-first, bwd": medians["bwd features-last"] / medians["bwd nodes-first"],
        "features-last / nodes-first, bwd+cg": medians["bwd+cg features-last"] / medians["bwd+cg nodes-first"],
        "with / without constants_grad, nodes-first": medians["bwd+cg nodes-first"] / medians["bwd nodes-first"],
        "with / without constants_grad, features-last":
            medians["bwd+cg features-last"] / medians["bwd features-last"],
    }
    for name, value in ratio.items():
        print(f"  {name:46s} {value:.2f}x")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=41)
    parser.add_argument("--shape", action="append", default=None, help="NODESxBATCH (default 1024x1024)")
    parser.add_argument("--dtype", action="append", default=None, choices=["float32", "float64"])
    parser.add_argument("--threads", type=int, default=0, help="OpenMP threads (0: the default)")
    args = parser.parse_args(argv)
    from heterosymnn import config

    with tempfile.TemporaryDirectory() as cache_dir, config.override(cache_dir=cache_dir,
                                                                     num_threads=args.threads):
        for dtype in args.dtype or ["float32"]:
            for shape in args.shape or ["1024x1024"]:
                nodes, batch = (int(v) for v in shape.lower().split("x"))
                measure(nodes, batch, dtype, args.repeats)


if __name__ == "__main__":
    main()
