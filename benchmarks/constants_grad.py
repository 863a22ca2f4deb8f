"""What the constants' gradient costs on CPU_JIT: the kernels alone, in one interleaved run.

Workload: the 8-formula layer of ``torch_train.py`` (1.5 learnable constants per node),
blocked and interleaved, float32, nodes first and features last. For each it times, in a
rotating order (``cpu_peers.timed``: each timed call right after an untimed one of itself),

* ``fwd``: ``forward_kernel(z, out)``,
* ``bwd``: ``backward_kernel(z, g, out)``,
* ``bwd+cg``: ``backward_kernel(z, g, out, constants_grad=cg)`` (input gradient and every
  constant's gradient in one pass),

and prints medians in ms with ``bwd+cg / bwd`` and ``bwd+cg / (fwd + bwd)``: the terms of
the constants' derivatives are about a forward's work, so the second ratio near 1 says the
pass adds little beyond them. Per-call samples are timed over several calls each.

Usage: python benchmarks/constants_grad.py [--repeats N] [--threads N] [--sizes 1024x1024,256x256]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from cpu_peers import timed  # noqa: E402
from torch_train import Layer  # noqa: E402  (numpy only: torch is imported by its cases)


def case(batch: int, features: int, blocked: bool, features_last: bool, repeats: int) -> dict:
    from heterosymnn import SymbolicJITCompiler

    layer = Layer(features, blocked)
    comp = SymbolicJITCompiler(layer.configs, "CPU_JIT", dtype="float32", strict=True)
    rng = np.random.default_rng(0)
    shape = (batch, features) if features_last else (features, batch)
    z, g = (rng.standard_normal(shape).astype(np.float32) for _ in range(2))
    out, cg = np.empty_like(z), np.zeros(len(comp.constant_names))
    inner = max(1, 2_000_000 // (batch * features))  # about a millisecond a sample or more

    def many(call):
        def run():
            for _ in range(inner):
                call()
        return run

    calls = {"fwd": many(lambda: comp.forward_kernel(z, out, features_last=features_last)),
             "bwd": many(lambda: comp.backward_kernel(z, g, out, features_last=features_last)),
             "bwd+cg": many(lambda: comp.backward_kernel(z, g, out, constants_grad=cg,
                                                         features_last=features_last))}
    calls["bwd+cg"]()  # builds the constants-gradient functions (lazily, on first use)
    return {name: seconds / inner * 1e3 for name, seconds in timed(calls, repeats).items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=0, help="kernel threads (0: the OpenMP default)")
    parser.add_argument("--sizes", default="1024x1024,256x256", help="batch x features, comma-separated")
    args = parser.parse_args(argv)
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = os.environ["HETEROSYMNN_NUM_THREADS"] = str(args.threads)
    scratch = tempfile.mkdtemp(prefix="constants_grad_")
    os.environ.setdefault("HETEROSYMNN_CACHE_DIR", os.path.join(scratch, "heterosymnn"))
    start = time.perf_counter()
    try:
        for size in args.sizes.split(","):
            batch, features = (int(v) for v in size.split("x"))
            for blocked in (True, False):
                for features_last in (False, True):
                    m = case(batch, features, blocked, features_last, args.repeats)
                    print(f"{batch}x{features} {'blocked    ' if blocked else 'interleaved'} "
                          f"{'features last' if features_last else 'nodes first  '}: fwd {m['fwd']:.3f}  "
                          f"bwd {m['bwd']:.3f}  bwd+cg {m['bwd+cg']:.3f} ms   bwd+cg/bwd "
                          f"{m['bwd+cg'] / m['bwd']:.2f}  bwd+cg/(fwd+bwd) {m['bwd+cg'] / (m['fwd'] + m['bwd']):.2f}",
                          flush=True)
        print(f"{time.perf_counter() - start:.0f} s in all")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
