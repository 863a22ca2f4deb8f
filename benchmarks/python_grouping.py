"""CPU_PYTHON's grouping against a per-node Python loop, in one interleaved run.

A 1024-node layer of 8 activations (interleaved): CPU_PYTHON evaluates each
distinct formula once per call over all of its rows; the per-node loop calls
the same NumPy function once per row. Prints the median ms per forward call.

Usage: python benchmarks/python_grouping.py [--batch N] [--repeats N]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from heterosymnn import SymbolicJITCompiler  # noqa: E402
from heterosymnn.backends.python import numpy_function  # noqa: E402

CONFIGS = ["tanh", "sin", "relu", "sigmoid", "softplus", "gaussian",
           ("a*tanh(b*num)", {"a": 1.5, "b": 0.7}), "leaky_relu"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    rows = 1024
    comp = SymbolicJITCompiler([CONFIGS[r % 8] for r in range(rows)], "CPU_PYTHON")
    layer, params = comp._layer, comp._params
    functions = [numpy_function(s, dtype="float32") for s in layer.structures]
    plan = layer.plan
    z = np.random.default_rng(0).standard_normal((rows, args.batch)).astype(np.float32)
    out = np.empty_like(z)

    def per_node():
        for r in range(rows):
            s = plan.node_structure[r]
            out[r] = functions[s](z[r], *params[r, :plan.structure_slots[s]])

    def grouped():
        comp.forward_kernel(z, out=out)

    samples = {"per-node loop": [], "CPU_PYTHON grouped": []}
    for call in (per_node, grouped):
        call()
    for _ in range(args.repeats):
        for name, call in (("per-node loop", per_node), ("CPU_PYTHON grouped", grouped)):
            start = time.perf_counter()
            call()
            samples[name].append(time.perf_counter() - start)
    medians = {k: statistics.median(v) * 1e3 for k, v in samples.items()}
    print(f"{rows} nodes x {args.batch} batch, 8 formulas interleaved, float32, forward:")
    for name, ms in medians.items():
        print(f"  {name:20s} {ms:8.2f} ms")
    print(f"  grouping is {medians['per-node loop'] / medians['CPU_PYTHON grouped']:.1f}x faster")


if __name__ == "__main__":
    main()
