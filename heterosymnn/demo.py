"""``python -m heterosymnn demo``: build a heterogeneous layer on every backend, check, time."""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
import warnings
from typing import Callable, List, Optional, Sequence

import numpy as np

from .backends.base import CPU_JIT, CPU_PYTHON, GPU_CUDA
from .errors import HeteroSymNNError
from .jit.compiler import SymbolicJITCompiler

DEMO_FORMULAS = [
    "relu",
    ("a*sin(w*num)", {"a": 1.0, "w": 30.0}),
    "tanh",
    "sigmoid",
    ("leaky_relu", {"alpha": 0.1}),
    "gelu",
    "softplus",
    ("swish", {"beta": 1.5}),
]


def demo_configs(n_nodes: int) -> list:
    """``n_nodes`` configs cycling through 8 activations, constants varied per node."""
    configs = []
    for node in range(n_nodes):
        text, constants = (DEMO_FORMULAS[node % 8], {}) if isinstance(DEMO_FORMULAS[node % 8], str) \
            else DEMO_FORMULAS[node % 8]
        configs.append((text, {k: v * (1 + 0.01 * (node // 8)) for k, v in constants.items()}))
    return configs


def _median_seconds(call: Callable[[], object], repeats: int) -> float:
    call()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _row(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))


class _Progress(logging.Handler):
    """Shows the backends' build messages (which compiler, how many functions) as they happen."""

    def __init__(self, out):
        super().__init__(logging.INFO)
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        print(f"  {record.getMessage()}", file=self.out, flush=True)


def run(n_nodes: int = 1024, batch: int = 1024, repeats: int = 7, out=sys.stdout) -> int:
    """Run the demo; returns a process exit status (0: every backend that ran agreed)."""
    logger = logging.getLogger("heterosymnn.backends")
    handler, level = _Progress(out), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        return _run(n_nodes, batch, repeats, out)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _run(n_nodes: int, batch: int, repeats: int, out) -> int:
    configs = demo_configs(n_nodes)
    rng = np.random.default_rng(0)
    z = rng.standard_normal((n_nodes, batch)).astype(np.float32) * 3
    grad = rng.standard_normal((n_nodes, batch)).astype(np.float32)
    print(f"heterosymnn demo: {n_nodes} nodes x {batch} batch, float32, "
          f"8 activations interleaved (some with per-node constants)", file=out)
    results: List[dict] = []
    reference = None
    for method in (CPU_PYTHON, CPU_JIT, GPU_CUDA):
        print(f"- building {method} ...", file=out, flush=True)
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                comp = SymbolicJITCompiler(configs, method, strict=True)
        except HeteroSymNNError as exc:
            print(f"  {method} unavailable: {str(exc).splitlines()[0]}", file=out)
            continue
        cold = time.perf_counter() - start
        start = time.perf_counter()
        SymbolicJITCompiler(configs, method, strict=True)
        warm = time.perf_counter() - start
        xp = comp.array_module
        zd, gd = xp.asarray(z), xp.asarray(grad)
        fwd_out, bwd_out = comp.forward_kernel(zd), comp.backward_kernel(zd, gd)
        sync = getattr(getattr(xp, "cuda", None), "Device", None)
        finish = (lambda: sync().synchronize()) if sync else (lambda: None)
        fwd = _median_seconds(lambda: (comp.forward_kernel(zd, out=fwd_out), finish()), repeats)
        bwd = _median_seconds(lambda: (comp.backward_kernel(zd, gd, out=bwd_out), finish()), repeats)
        host = [np.asarray(a.get() if hasattr(a, "get") else a) for a in (fwd_out, bwd_out)]
        if reference is None:
            reference = host
            agree = "reference"
        else:
            ok = all(np.allclose(h, r, rtol=2e-4, atol=2e-5, equal_nan=True) for h, r in zip(host, reference))
            agree = "yes" if ok else "NO"
        results.append(dict(method=method, cold=cold, warm=warm, fwd=fwd, bwd=bwd, agree=agree, comp=comp))
    base = results[0]
    widths = (11, 10, 10, 12, 12, 9, 9, 10)
    print("", file=out)
    print(_row(("backend", "build", "rebuild", "fwd/call", "bwd/call", "fwd x", "bwd x", "agrees"), widths), file=out)
    for r in results:
        print(_row((r["method"], f"{r['cold']:.3f} s", f"{r['warm']:.3f} s", f"{r['fwd'] * 1e3:.3f} ms",
                    f"{r['bwd'] * 1e3:.3f} ms", f"{base['fwd'] / r['fwd']:.1f}", f"{base['bwd'] / r['bwd']:.1f}",
                    r["agree"]), widths), file=out)
    fastest = results[-1]["comp"]
    start = time.perf_counter()
    for node in range(0, n_nodes, 8):
        fastest.set_constants(node + 1, a=2.0, w=10.0)
    fastest.forward_kernel(fastest.array_module.asarray(z))
    print(f"\nchanged constants of {n_nodes // 8} nodes on {fastest.calculation_method} and ran again in "
          f"{time.perf_counter() - start:.4f} s with nothing rebuilt", file=out)
    return 0 if all(r["agree"] != "NO" for r in results) else 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="heterosymnn demo", description=__doc__)
    parser.add_argument("--nodes", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    return run(args.nodes, args.batch, args.repeats)
