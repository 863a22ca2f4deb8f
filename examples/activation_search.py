"""Search activation formulas on a Dask cluster: train a small model per candidate, rank them.

A population of candidate activations -- the named formulas plus formulas drawn,
with a seed, from heterosymnn's formula grammar -- is evaluated in parallel on
Dask workers. Each candidate trains the same small MLP (same initial weights,
same data) whose hidden layer uses the candidate with learnable constants, on a
fixed 1-D regression task; the final training MSE ranks them. Every candidate
is trained deterministically, so the same seed gives the same table on one
worker or on many.

Run it as it is (a local cluster of worker processes on 127.0.0.1)::

    python examples/activation_search.py --population 24 --workers 2
    python examples/activation_search.py --scheduler tcp://scheduler:8786 --bundle layers.hsb

``--bundle`` registers :class:`heterosymnn.distributed.WarmCache`, so workers
start with the kernels a previous run (or ``python -m heterosymnn.cache export``)
built; ``--write-bundle`` writes one from this machine's cache after the run.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import random
import re
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from distributed import WorkerPlugin

NAMED = ("relu", "tanh", "sigmoid", "swish", "gelu", "elu", "softplus", "mish", "selu", "leaky_relu",
         "softsign", "sin", "gaussian")
# Well-behaved one-argument functions of the grammar (no poles or domain limits near the data).
UNARY = ("sin", "cos", "tanh", "atan", "erf", "asinh", "abs", "relu", "sigmoid", "softplus")
TEMPLATES = (
    "{u}(a*num)",
    "a*{u}(num) + b*num",
    "{u}(num)*{v}(a*num)",
    "num*{u}(a*num)",
    "{u}({v}(num)) + b*num",
    "a*{u}(num) + (1 - a)*{v}(num)",
)
HIDDEN = 16


@dataclasses.dataclass(frozen=True)
class Candidate:
    name: str
    config: Any  # a node config: "relu" or (formula, {constants})


@dataclasses.dataclass(frozen=True)
class Result:
    name: str
    loss: float
    constants: Tuple[Tuple[str, float], ...]
    error: str = ""


def grammar_functions() -> List[str]:
    """The unary functions this search draws from, as the formula grammar knows them."""
    from heterosymnn.symbolic.grammar import FUNCTIONS

    return [name for name in UNARY if name in FUNCTIONS or name in NAMED]


def population(size: int, seed: int) -> List[Candidate]:
    """Named formulas (up to half), then distinct formulas drawn from the grammar with ``seed``."""
    candidates = [Candidate(name, name) for name in NAMED[:min(len(NAMED), (size + 1) // 2)]]
    functions = grammar_functions()
    space = sorted({t.format(u=u, v=v) for t in TEMPLATES for u in functions for v in functions})
    if size - len(candidates) > len(space):
        raise ValueError(f"--population {size} is more than the {len(candidates) + len(space)} "
                         f"distinct candidates this grammar makes")
    for text in random.Random(seed).sample(space, size - len(candidates)):
        constants = {name: value for name, value in (("a", 1.0), ("b", 0.1)) if re.search(rf"\b{name}\b", text)}
        candidates.append(Candidate(text, (text, constants)))
    return candidates


def task_data() -> Tuple[Any, Any]:
    import torch

    x = torch.linspace(-3.0, 3.0, 256).unsqueeze(1)
    return x, torch.sin(2.0 * x) + 0.3 * x ** 2 - 0.5


def evaluate(candidate: Candidate, steps: int, seed: int) -> Result:
    """Train the MLP with ``candidate`` in its hidden layer; its final MSE and learned constants."""
    import torch
    from torch import nn

    from heterosymnn.torch import HeteroActivation

    torch.set_num_threads(1)  # one thread per worker process, and sums in one fixed order
    x, y = task_data()
    generator = torch.Generator().manual_seed(seed)  # the same initial weights for every candidate
    try:
        act = HeteroActivation([candidate.config] * HIDDEN)
        first, last = nn.Linear(1, HIDDEN), nn.Linear(HIDDEN, 1)
        with torch.no_grad():
            for layer in (first, last):
                bound = 1.0 / math.sqrt(layer.in_features)
                layer.weight.copy_(torch.empty_like(layer.weight).uniform_(-bound, bound, generator=generator))
                layer.bias.copy_(torch.empty_like(layer.bias).uniform_(-bound, bound, generator=generator))
        model = nn.Sequential(first, act, last)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
        for _ in range(steps):
            optimizer.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            final = nn.functional.mse_loss(model(x), y).item()
        learned = act.node_constants()[0] if act.constant_names else {}
        constants = tuple(sorted((k, float(v)) for k, v in learned.items()))
        return Result(candidate.name, final if math.isfinite(final) else math.inf, constants)
    except Exception as exc:  # noqa: BLE001 - a failed candidate ranks last, with its reason
        return Result(candidate.name, math.inf, (), f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}")


def search(client: Any, candidates: Sequence[Candidate], steps: int, seed: int, progress: bool = True,
           on_result: Optional[Callable[[Result], None]] = None) -> List[Result]:
    """Evaluate every candidate on the cluster; results ranked best first.

    Dask retries the tasks of a worker that dies (up to ``distributed.scheduler.allowed-failures``
    times); ``on_result`` is called as each candidate finishes.
    """
    from distributed import as_completed

    futures = client.map(evaluate, list(candidates), steps=steps, seed=seed,
                         key=[f"candidate-{i}-{seed}-{steps}" for i in range(len(candidates))])
    results, started = [], time.perf_counter()
    for future in as_completed(futures):
        results.append(future.result())
        if on_result is not None:
            on_result(results[-1])
        if progress:
            done, rate = len(results), len(results) / (time.perf_counter() - started)
            best = min(r.loss for r in results)
            bar = "#" * (30 * done // len(futures))
            print(f"\r[{bar:<30}] {done}/{len(futures)}  {rate:5.2f} candidates/s  best MSE {best:.4g}",
                  end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return sorted(results, key=lambda r: (r.loss, r.name))


def table(results: Sequence[Result]) -> str:
    lines = [f"{'rank':>4}  {'final MSE':>12}  {'formula':<40}  learned constants"]
    for rank, result in enumerate(results, 1):
        learned = ", ".join(f"{k}={v:.4f}" for k, v in result.constants) or result.error
        lines.append(f"{rank:>4}  {result.loss:>12.6g}  {result.name:<40.40}  {learned}")
    return "\n".join(lines)


def builds_per_worker(client: Any) -> Dict[str, int]:
    """Kernel builds each worker process logged in its cache (from the cache's build log)."""

    def count() -> int:
        from heterosymnn.cache import default_cache
        from heterosymnn.cache.buildlog import read

        return sum(1 for r in read(default_cache().layout.log) if "event" not in r and r.get("pid") == os.getpid())

    return {address: n for address, n in sorted(client.run(count).items())}


class SeparateCaches(WorkerPlugin):
    """A worker plugin giving each worker its own cache directory (to act as separate machines)."""

    idempotent = True
    name = "example-separate-caches"

    def __init__(self, base: str) -> None:
        self.base = os.path.abspath(base)

    def setup(self, worker: Any) -> None:
        os.environ["HETEROSYMNN_CACHE_DIR"] = os.path.join(self.base, str(worker.name))


def connect(args: argparse.Namespace) -> Tuple[Any, Optional[Any]]:
    from distributed import Client, LocalCluster

    if args.scheduler:
        return Client(args.scheduler), None
    cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address=None)
    return Client(cluster), cluster


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scheduler", help="address of a running Dask scheduler (default: a local cluster)")
    parser.add_argument("--workers", type=int, default=2, help="local cluster: worker processes (default 2)")
    parser.add_argument("--population", type=int, default=int(os.environ.get("HETEROSYMNN_EXAMPLE_POPULATION", 24)))
    parser.add_argument("--steps", type=int, default=int(os.environ.get("HETEROSYMNN_EXAMPLE_STEPS", 200)))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bundle", help="warm every worker's cache from this bundle (WarmCache)")
    parser.add_argument("--write-bundle", metavar="PATH", help="after the run, export this machine's cache here")
    parser.add_argument("--separate-caches", metavar="DIR",
                        help="give each worker its own cache below DIR (as if on separate machines)")
    args = parser.parse_args(argv)

    candidates = population(args.population, args.seed)
    client, cluster = connect(args)
    try:
        if args.separate_caches:
            client.register_plugin(SeparateCaches(args.separate_caches))
        if args.bundle:
            from heterosymnn.distributed import WarmCache

            client.register_plugin(WarmCache(args.bundle))
        started = time.perf_counter()
        results = search(client, candidates, args.steps, args.seed)
        seconds = time.perf_counter() - started
        workers = len(client.scheduler_info()["workers"])
        print(f"{len(candidates)} candidates, {args.steps} steps each, on {workers} worker(s): "
              f"{seconds:.1f} s, {len(candidates) / seconds:.2f} candidates/s; builds per worker: "
              f"{list(builds_per_worker(client).values())}", file=sys.stderr)
        print(table(results))
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    if args.write_bundle:
        from heterosymnn.cache import export_bundle

        report = export_bundle(args.write_bundle)
        print(f"wrote {len(report.entries)} cache entries to {report.path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
