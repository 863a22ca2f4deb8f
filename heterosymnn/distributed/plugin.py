"""``WarmCache``: a Dask worker plugin that imports a cache bundle on every worker.

The bundle's bytes travel inside the plugin, so workers on other machines need
no shared filesystem: the scheduler keeps the plugin and sets it up on every
worker that is running when it is registered and on every worker that joins
later. Each worker imports the bundle through
:func:`heterosymnn.cache.import_bundle` -- verified entry by entry and published
under the cache's key locks -- so the workers of one machine sharing one cache
directory import each entry once between them, and a worker whose platform or
CPU level differs skips those entries and builds what it lacks, once per machine.
"""
from __future__ import annotations

import getpass
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Optional, Union

import dask
from distributed import WorkerPlugin

from ..cache import ImportReport, KernelCache, import_bundle
from ..cache.bundle import read_manifest
from ..deferred import get_logger

log = get_logger("heterosymnn.distributed")

PathLike = Union[str, "os.PathLike[str]"]

#: The environment variable that names the cache directory (see ``heterosymnn.config``).
CACHE_ENV = "HETEROSYMNN_CACHE_DIR"


def scratch_cache_dir() -> str:
    """The default cache directory of a worker: node-local scratch, shared by its workers.

    Dask's ``temporary-directory`` setting (meant to be local scratch) or the
    system's temporary directory, plus ``heterosymnn-cache-<user>``. Per-user
    home caches often sit on NFS, where file locks are unreliable (see the
    README's Reliability section).
    """
    base = dask.config.get("temporary-directory", None) or tempfile.gettempdir()
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name (containers): the uid says the same
        user = str(os.getuid()) if hasattr(os, "getuid") else "user"
    return os.path.join(os.path.abspath(os.path.expanduser(base)), f"heterosymnn-cache-{user}")


class WarmCache(WorkerPlugin):
    """Import a cache bundle into each Dask worker's kernel cache as the worker starts.

    Parameters
    ----------
    bundle : path
        A bundle written by ``python -m heterosymnn.cache export`` (or
        :func:`heterosymnn.cache.export_bundle`). It is read here, on the client,
        and its bytes are sent to the workers with the plugin.
    cache_dir : path, optional
        The workers' cache directory. Default: ``HETEROSYMNN_CACHE_DIR`` when it is
        set in the worker's environment, else :func:`scratch_cache_dir`. The
        worker process is pointed at it, so its tasks use the warmed cache.

    Raises
    ------
    FileNotFoundError
        If ``bundle`` cannot be read.
    heterosymnn.cache.BundleError
        If it is not a valid bundle (checked before anything is sent).

    Attributes
    ----------
    report : ImportReport or None
        On a worker, after setup: what the import did (imported, already present,
        skipped with a reason).

    Examples
    --------
    >>> from distributed import Client                        # doctest: +SKIP
    >>> client = Client("tcp://scheduler:8786")               # doctest: +SKIP
    >>> client.register_plugin(WarmCache("layers.hsb"))       # doctest: +SKIP
    """

    idempotent = True  # registering the same bundle twice does not import it twice

    def __init__(self, bundle: PathLike, *, cache_dir: Optional[PathLike] = None) -> None:
        path = Path(bundle)
        try:
            self.data = path.read_bytes()
        except OSError as exc:
            raise FileNotFoundError(f"WarmCache: cannot read the cache bundle {path}: {exc.strerror or exc}. "
                                    f"Make one with `python -m heterosymnn.cache export {path}`") from None
        # Checked here, once: a bad bundle is an error on the client, not on every worker.
        self.entries = len(read_manifest(path).entries)
        self.bundle_name = path.name
        self.cache_dir = os.fspath(cache_dir) if cache_dir is not None else None
        # One plugin per bundle: a second, different bundle is registered beside the first.
        self.name = f"heterosymnn-warm-cache-{hashlib.sha256(self.data).hexdigest()[:16]}"
        self.report: Optional[ImportReport] = None

    def setup(self, worker: Any) -> None:
        """Point the worker at its cache directory and import the bundle into it."""
        directory = self.cache_dir or os.environ.get(CACHE_ENV) or scratch_cache_dir()
        # Tasks run in this process: the environment is what heterosymnn.config reads.
        os.environ[CACHE_ENV] = directory
        cache = KernelCache(directory)
        scratch = getattr(worker, "local_directory", None) or tempfile.gettempdir()
        fd, temp = tempfile.mkstemp(prefix="heterosymnn-", suffix=f"-{self.bundle_name}", dir=scratch)
        try:
            with os.fdopen(fd, "wb") as stream:
                stream.write(self.data)
            self.report = import_bundle(temp, cache=cache)
        finally:
            os.unlink(temp)
        report = self.report
        log.info("worker %s: cache bundle %s: %d imported, %d already present, %d skipped (%s)",
                 getattr(worker, "name", "?"), self.bundle_name, len(report.imported), len(report.present),
                 len(report.skipped), report.directory)
        for key, reason in report.skipped:
            log.info("skipped %s...: %s (it is built on first use instead)", key[:16], reason)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["report"] = None  # a report belongs to the worker that made it
        return state
