"""Memory in long runs: one process constructs many distinct CPU_JIT layers, one after another.

A neuroevolution run builds a new layer every generation and drops the old one. Each layer here
is a random mix of formulas drawn from a fixed pool (so only the pool's few C structures are ever
compiled) with random constants and node counts, so every layer's config text, and so its cached
layer plan, is new. Each layer runs forward once and is dropped. The process's resident memory
is printed at checkpoints: what the per-process memos of the cache and the symbolic front end
keep must stop growing once they are full.

Usage: python benchmarks/memory_growth.py [--layers 20000] [--pool 40] [--every N] [--seed 0] [--json]
"""
from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from heterosymnn import SymbolicJITCompiler, config  # noqa: E402

# Formula shapes and the constant names each uses; a pool entry is one shape with a small
# integer folded into its text (``num/3``), so ~40 distinct structures come out of 10 shapes.
SHAPES: List[Tuple[str, str]] = [
    ("a*sin(w*num/{k}) + b", "awb"),
    ("a*tanh(b*num + {k}) + c", "abc"),
    ("a*exp(-num**2/{k})", "a"),
    ("num**3/{k} - c*num", "c"),
    ("k*log({k} + num**2)", "k"),
    ("s*atan(num/{k})", "s"),
    ("sqrt({k} + num**2)", ""),
    ("cos(num/{k}) + num/2", ""),
    ("a*num**2 + b*num/{k}", "ab"),
    ("num*exp(-a*num**2/{k})", "a"),
]
CHECKPOINTS = (1000, 5000, 10000, 20000)


def formula_pool(size: int) -> List[Tuple[str, str]]:
    pool = [(text.format(k=k), names) for k in range(2, 2 + size) for text, names in SHAPES]
    return pool[:size]


def random_layer(rng: random.Random, pool: List[Tuple[str, str]]) -> List[Tuple[str, Dict[str, float]]]:
    """About 8 formulas of the pool, some repeated, with random constants: a new config text."""
    return [(text, {name: round(rng.uniform(0.5, 1.5), 3) for name in names})
            for text, names in (pool[rng.randrange(len(pool))] for _ in range(rng.randint(4, 12)))]


def distinct_texts(layers: int, pool: List[Tuple[str, str]], seed: int) -> int:
    """How many of the run's layers have distinct config texts (the same draws as the run)."""
    rng = random.Random(seed)
    seen = {tuple(text for text, _ in random_layer(rng, pool)) for _ in range(layers)}
    count = len(seen)
    del seen
    gc.collect()
    return count


def rss_mib() -> float:
    """Resident set size now (Linux ``/proc``; elsewhere the peak from ``resource``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)


def run(layers: int, pool_size: int, seed: int, cache_dir: Path, every: int = 0) -> Dict[str, Any]:
    rng = random.Random(seed)
    pool = formula_pool(pool_size)
    extra = set(range(every, layers, every)) if every > 0 else set()
    # The first layer imports SymPy and compiles: the baseline the growth is measured from.
    checkpoints = {1, layers} | {c for c in CHECKPOINTS if c <= layers} | extra
    distinct = distinct_texts(layers, pool, seed)  # before measuring: the set would grow with the run
    rows: List[Dict[str, float]] = []
    start = time.perf_counter()
    with config.override(cache_dir=str(cache_dir)):
        for index in range(1, layers + 1):
            configs = random_layer(rng, pool)
            comp = SymbolicJITCompiler(configs, "CPU_JIT", strict=True)
            comp.forward_kernel(np.linspace(-1, 1, len(configs) * 4, dtype=np.float32).reshape(len(configs), 4))
            del comp
            if index in checkpoints:
                gc.collect()
                rows.append({"layers": index, "rss_mib": round(rss_mib(), 1),
                             "seconds": round(time.perf_counter() - start, 1)})
    return {"layers": layers, "distinct_layer_texts": distinct, "pool": len(pool), "checkpoints": rows,
            "growth_per_1000": _growth(rows, layers), "seconds": round(time.perf_counter() - start, 1)}


def _growth(rows: List[Dict[str, float]], layers: int) -> Dict[str, float]:
    """MiB per 1000 layers in the first and the second half of the run (after the first layer)."""
    at = {row["layers"]: row["rss_mib"] for row in rows}
    half = max((n for n in at if 1 < n <= layers // 2), default=None)
    if half is None:
        return {}
    first = (at[half] - at[1]) / (half - 1) * 1000
    second = (at[layers] - at[half]) / (layers - half) * 1000
    return {"first_half": round(first, 2), "second_half": round(second, 2)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=20000)
    parser.add_argument("--pool", type=int, default=40, help="distinct formulas drawn from")
    parser.add_argument("--every", type=int, default=0, help="also print RSS every N layers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hsnn-memory-") as work:
        result = run(args.layers, args.pool, args.seed, Path(work), args.every)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['layers']} layers ({result['distinct_layer_texts']} distinct config texts) from a pool of "
          f"{result['pool']} formulas, {result['seconds']} s")
    for row in result["checkpoints"]:
        print(f"  after {row['layers']:>6} layer(s)  RSS {row['rss_mib']:8.1f} MiB   ({row['seconds']:.1f} s)")
    growth = result["growth_per_1000"]
    if growth:
        print(f"RSS growth per 1000 layers: first half {growth['first_half']:.2f} MiB, "
              f"second half {growth['second_half']:.2f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
