"""Helpers the Dask tests send to worker processes (importable there by name).

No ``__init__.py`` in this folder on purpose: ``tests`` is on ``sys.path`` and a
``tests/distributed`` package would shadow Dask's ``distributed`` itself.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence

import numpy as np
from distributed import WorkerPlugin

from heterosymnn import SymbolicJITCompiler

CACHE_ENV = "HETEROSYMNN_CACHE_DIR"


@contextlib.contextmanager
def local_cluster(n_workers: int = 2) -> Iterator[tuple]:
    """A cluster of worker processes, scheduler and workers on 127.0.0.1, no dashboard."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, worker_dashboard_address=None) as cluster, \
            Client(cluster) as client:
        yield cluster, client


class PerWorkerCache(WorkerPlugin):
    """Give each worker its own cache directory below ``base`` (two "machines" on one host)."""

    idempotent = True
    name = "test-per-worker-cache"

    def __init__(self, base: str) -> None:
        self.base = base

    def setup(self, worker: Any) -> None:
        os.environ[CACHE_ENV] = os.path.join(self.base, str(worker.name))


def run_layer(configs: Sequence[Any]) -> Dict[str, Any]:
    """Forward, backward and constants' gradient of a layer on CPU_JIT; where its cache is."""
    comp = SymbolicJITCompiler(list(configs), "CPU_JIT", strict=True)
    z = np.linspace(-2.0, 2.0, 4 * len(configs), dtype=np.float32).reshape(len(configs), 4)
    grad = np.ones_like(z)
    cgrad = np.zeros(len(comp.constant_names))
    backward = comp.backward_kernel(z, grad, constants_grad=cgrad)
    return {"forward": comp.forward_kernel(z).tolist(), "backward": backward.tolist(),
            "constants_grad": cgrad.tolist(), "cache_dir": os.environ.get(CACHE_ENV), "pid": os.getpid()}


def builds_in(cache_dir: Path) -> List[Dict[str, Any]]:
    """The build-log lines of real builds (not imports or removals) in a cache directory."""
    from heterosymnn.cache import KernelCache
    from heterosymnn.cache.buildlog import read

    return [r for r in read(KernelCache(cache_dir).layout.log) if "event" not in r]


def imports_in(cache_dir: Path) -> List[Dict[str, Any]]:
    from heterosymnn.cache import KernelCache
    from heterosymnn.cache.buildlog import read

    return [r for r in read(KernelCache(cache_dir).layout.log) if r.get("event") == "imported"]
