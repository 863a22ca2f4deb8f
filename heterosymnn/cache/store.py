"""The kernel cache: lookup, locked build, atomic publish, in-memory layer, stats.

Modelled on Triton's cache manager: one private temporary directory per build
on the cache's filesystem, ``meta.json`` written last, ``os.replace`` to publish.
What it adds is a per-key file lock, so that dozens of processes starting
together on a cold cache build each artifact once and the others wait and
reuse it, and a check of every entry before use, so that a damaged entry is
rebuilt instead of crashing its user.
"""
from __future__ import annotations

import contextlib
import os
import threading
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Union

from ..config import settings
from ..errors import CacheError, CompilationWarning
from . import buildlog, locks, records
from .entry import Entry, mark_verified, move_aside, unchanged, verify
from .layout import Layout, check_key, configured_base, describe_error, fallback_layout
from .memory import CacheStats, MemoryLayer
from .publish import Builder, Unusable, function_count, make
from .records import RecordBuilder, RecordLoader
from ..deferred import get_logger

log = get_logger("heterosymnn.cache")

PathLike = Union[str, "os.PathLike[str]"]


class KernelCache:
    """An on-disk cache of build artifacts shared by every process of a user.

    Parameters
    ----------
    base : path, optional
        The cache directory; default ``HETEROSYMNN_CACHE_DIR`` or the per-user
        cache directory. Entries live in its ``v<CACHE_SCHEMA>`` subfolder.

    Notes
    -----
    An unusable directory (read-only, full, below a regular file) is replaced by
    a private temporary one with a :class:`~heterosymnn.errors.PerformanceWarning`.
    """

    def __init__(self, base: Optional[PathLike] = None) -> None:
        self._configured = Path(os.path.abspath(os.fspath(base))) if base is not None else configured_base()
        self._layout = Layout(self._configured)
        self._memory = MemoryLayer()
        self._ready = False
        self._ready_lock = threading.RLock()

    def __repr__(self) -> str:
        return f"KernelCache({str(self._layout.base)!r})"

    @property
    def root(self) -> Path:
        """The folder holding entries, locks and the build log (``<base>/v<schema>``)."""
        return self._layout.root

    @property
    def layout(self) -> Layout:
        """Every path of the cache in use (see :class:`~heterosymnn.cache.layout.Layout`)."""
        return self._layout

    @property
    def is_fallback(self) -> bool:
        """True when the configured directory was unusable and a temporary one is used."""
        return self._layout.base != self._configured

    # -- reading -------------------------------------------------------------------------

    def lookup(self, key: str) -> Optional[Entry]:
        """The entry for ``key``, or ``None`` (a miss: call :meth:`build`).

        Memory first, then disk. A damaged entry is a miss with a
        :class:`~heterosymnn.errors.CompilationWarning` saying what is wrong;
        :meth:`build` then replaces it under the key's lock.
        """
        check_key(key)
        entry = self._memory.entry(key)
        if entry is not None:
            # unchanged() stats meta.json and every file: a concurrent clear() (meta.json
            # gone), a record rewritten by another process, or a file rewritten since it
            # was hashed all send the lookup back to disk.
            if unchanged(entry):
                self._memory.count(memory_hits=1)
                return entry
            self._memory.forget(key)
        entry = self._from_disk(key, repair=False)
        if entry is not None:
            self._memory.count(disk_hits=1)
        return entry

    def remember(self, key: str, obj: Any) -> None:
        """Keep a loaded object (e.g. an extension module) for ``key`` in this process."""
        self._memory.remember(check_key(key), obj)

    def recall(self, key: str) -> Optional[Any]:
        """The object :meth:`remember` kept for ``key`` (counted as a memory hit), or ``None``."""
        return self._memory.recall(key)

    def stats(self) -> CacheStats:
        """Counters of this instance: builds, functions_built, disk_hits, memory_hits."""
        return self._memory.stats()

    def reset_stats(self) -> None:
        """Zero this instance's counters (entries and objects stay in memory)."""
        self._memory.reset_stats()

    # -- writing -------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self, keys: Sequence[str]) -> Iterator[None]:
        """Hold the locks of several keys (sorted order: deadlock-free).

        For callers that build several keys in one compiler run: inside the
        block, :meth:`lookup` tells what is missing and :meth:`build` or
        :meth:`publish` on any of these keys re-enters the held lock.
        """
        keys = [check_key(k) for k in keys]
        what = f"building {len(keys)} kernel(s)"
        with contextlib.ExitStack() as stack:
            layout = self._ensure_ready()
            try:
                stack.enter_context(locks.hold_many([layout.lock_path(k) for k in keys],
                                                    settings().lock_timeout, what))
            except CacheError:
                raise
            except OSError as exc:  # the directory turned read-only, full or vanished since it was prepared
                layout = self._fall_back(Unusable(exc, layout.base))
                stack.enter_context(locks.hold_many([layout.lock_path(k) for k in keys],
                                                    settings().lock_timeout, what))
            yield

    def build(self, key: str, builder: Builder, *, record: bool = False) -> Entry:
        """The entry for ``key``: looked up, else built and published under its lock.

        After taking the lock the entry is looked up again, so of many processes
        asking for the same missing key at once, one builds and the others wait
        and reuse its entry.

        Parameters
        ----------
        key : str
            From :func:`~heterosymnn.cache.key.cache_key`.
        builder : callable
            ``builder(build_dir) -> metadata``: writes the artifact files into the
            empty private directory ``build_dir`` and returns JSON-serializable
            metadata (``toolchain``, ``functions``... are logged).
        record : bool
            The entry describes or names artifacts (a layer plan, the module holding
            a function) rather than being a build: it is neither counted in
            :meth:`stats` ``builds`` nor logged in ``builds.jsonl``.

        Returns
        -------
        Entry
            The published entry (possibly built by another process meanwhile).

        Raises
        ------
        CacheError
            If the key's lock is not obtained within ``HETEROSYMNN_LOCK_TIMEOUT``,
            or if neither the configured directory nor a private temporary one
            can hold the entry (the message names the disk and the fix).
        Exception
            Whatever the builder raises; its temporary directory is removed.
        """
        entry = self.lookup(key)
        if entry is not None:
            return entry
        try:
            return self._build(key, builder, record)
        except Unusable as exc:
            self._fall_back(exc)
        try:
            return self._build(key, builder, record)
        except Unusable as exc:  # the private temporary cache failed as well (e.g. the same full disk)
            raise _no_cache_error(f"the temporary kernel cache {self._layout.base} is unusable too",
                                  exc.error) from exc.error

    def publish(self, key: str, files: Mapping[str, PathLike], metadata: Optional[Mapping[str, Any]] = None) -> Entry:
        """Publish existing files (copied) as the entry for ``key``; see :meth:`build`."""

        def copy(build_dir: Path) -> Optional[Mapping[str, Any]]:
            import shutil  # ~3 ms to import: not on the warm path

            for name, source in files.items():
                target = build_dir.joinpath(*name.split("/"))
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
            return metadata

        return self.build(key, copy)

    def resolve(self, keys: Sequence[str], load: RecordLoader, build_missing: RecordBuilder) -> Dict[str, Any]:
        """Get or build several artifacts through their records, in one call.

        See :func:`heterosymnn.cache.records.resolve`: usable records are loaded,
        missing ones are built once under their locks (taken and released by the
        calling thread) and published.
        """
        return records.resolve(self, keys, load, build_missing)

    def invalidate(self, entry: Entry, reason: str) -> None:
        """Report that ``entry`` failed to load, and remove it so it is rebuilt.

        Only the very entry that failed is removed: if another process has
        republished the key meanwhile, the new entry stays.
        """
        warnings.warn(
            f"the kernel cache entry {entry.path} could not be used ({reason}); it will be rebuilt",
            CompilationWarning,
            stacklevel=2,
        )
        self.discard(entry)

    def discard(self, entry: Entry) -> None:
        """Remove ``entry``, which is obsolete rather than broken (no warning).

        Only that very entry is removed: if another process has republished
        the key meanwhile, the new entry stays.
        """
        self._memory.forget(entry.key)
        try:
            with locks.hold(self._layout.lock_path(entry.key), settings().lock_timeout):
                meta, _ = verify(entry.path, entry.key)
                same = meta is None or (meta.get("created"), meta.get("pid")) == (
                    entry.meta.get("created"), entry.meta.get("pid"))
                if same and entry.path.exists():
                    note = move_aside(entry.path, self._layout.trash)
                    if note:
                        log.warning("could not remove %s: %s", entry.path, note)
        except OSError as exc:  # a read-only cache: the rebuild then goes to the fallback directory
            log.warning("could not remove the unusable entry %s: %s", entry.path, exc)

    # -- internals -----------------------------------------------------------------------

    def _ensure_ready(self) -> Layout:
        with self._ready_lock:
            if not self._ready:
                try:
                    self._layout.prepare()
                except OSError as exc:
                    self._switch(exc)
                self._ready = True
            return self._layout

    def _fall_back(self, failure: Unusable) -> Layout:
        """Switch to the private temporary cache after ``failure``; the layout now in use."""
        with self._ready_lock:
            if self._layout.base == failure.base:  # another thread may have switched already
                self._switch(failure.error)
            return self._layout

    def _switch(self, error: OSError) -> None:
        if self.is_fallback:
            raise _no_cache_error(f"the temporary kernel cache {self._layout.base} is unusable too", error) from error
        try:
            layout = fallback_layout(self._configured, error)
            layout.prepare()
        except OSError as exc:
            raise _no_cache_error(f"the kernel cache directory {self._configured} is unusable "
                                  f"({describe_error(error)}) and so is a temporary one", exc) from exc
        self._layout = layout
        self._ready = True

    def _from_disk(self, key: str, repair: bool) -> Optional[Entry]:
        layout = self._layout
        path = layout.entry_dir(key)
        if not path.is_dir():
            return None
        meta, reason = verify(path, key)
        if meta is None:
            if not path.exists():
                return None  # removed while we looked (clear, prune): a plain miss
            if self._memory.first_warning(key):
                warnings.warn(f"the kernel cache entry {path} is unusable: {reason}; it will be rebuilt",
                              CompilationWarning, stacklevel=3)
            if repair:  # only under the key's lock: nobody can be publishing a good one now
                note = move_aside(path, layout.trash)
                if note:
                    log.warning("could not move the broken entry aside: %s", note)
            return None
        entry = Entry(key, path, meta)
        self._memory.add_entry(entry)
        if self._memory.first_touch(key):
            _touch(path)
        return entry

    def _build(self, key: str, builder: Builder, record: bool) -> Entry:
        layout = self._ensure_ready()
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(locks.hold(layout.lock_path(key), settings().lock_timeout,
                                               f"building kernel {key[:12]}"))
            except CacheError:
                raise
            except OSError as exc:
                raise Unusable(exc, layout.base) from exc
            entry = self._from_disk(key, repair=True)  # another process may have built it
            if entry is not None:
                self._memory.count(disk_hits=1)
                return entry
            try:
                entry, seconds = make(layout, key, builder)
            except Unusable as exc:
                exc.base = layout.base
                raise
            return self._built(layout, entry, seconds, record)

    def _built(self, layout: Layout, entry: Entry, seconds: float, record: bool) -> Entry:
        mark_verified(entry.path, entry.meta)
        self._memory.add_entry(entry)
        self._memory.first_touch(entry.key)  # just written: its mtime is already fresh
        if record:  # counting small records would hide the real compiles
            return entry
        functions = function_count(entry.meta.get("functions"))
        self._memory.count(builds=1, functions_built=functions or 0)
        record = {
            "key": entry.key, "pid": os.getpid(), "functions": functions, "seconds": round(seconds, 6),
            "toolchain": entry.meta.get("toolchain"), "kind": entry.meta.get("kind"),
            "created": entry.meta.get("created"), "bytes": sum(entry.meta.get("sizes", {}).values()),
        }
        buildlog.append(layout.log, record)
        log.info("built cache entry %s in %.2f s (%s function(s))", entry.key[:12], seconds, functions)
        return entry


def _no_cache_error(problem: str, error: OSError) -> CacheError:
    # Both the configured directory and the private temporary one failed (often
    # one full disk): there is nowhere to build, so name the disk and the fix.
    return CacheError(
        f"{problem} ({describe_error(error)}): no compiled kernel can be stored. Fix: free some space on "
        f"that disk (or make it writable), or set HETEROSYMNN_CACHE_DIR to a writable directory "
        f"on a disk with free space.")


def _touch(path: Path) -> None:
    # The entry directory's mtime is its last-use time for prune (LRU); a
    # read-only cache simply keeps the creation time.
    try:
        os.utime(path, None)
    except OSError:
        pass


_defaults: Dict[str, KernelCache] = {}
_defaults_lock = threading.Lock()


def default_cache() -> KernelCache:
    """The process-wide cache for the directory configured *now* (follows ``override()``)."""
    base = str(configured_base())
    with _defaults_lock:
        cache = _defaults.get(base)
        if cache is None:
            cache = _defaults[base] = KernelCache(base)
        return cache


def stats() -> CacheStats:
    """Counters of the default cache (see :class:`CacheStats`)."""
    return default_cache().stats()


def reset_stats() -> None:
    """Zero the counters of the default cache."""
    default_cache().reset_stats()
