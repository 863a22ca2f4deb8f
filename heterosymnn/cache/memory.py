"""The per-process layer of the cache: known entries, loaded objects, counters.

Every map here is bounded (:class:`LruMap`), so that a process constructing
thousands of distinct layers one after another (neuroevolution) keeps a fixed
memory budget. Forgetting is always safe: a dropped entry is looked up on disk
again, a dropped object is loaded again (a loaded extension module is never
unloaded: CPython hands the same module back), a dropped touch or warning is
merely repeated.
"""
from __future__ import annotations

import collections
import dataclasses
import threading
from typing import TYPE_CHECKING, Any, Dict, Hashable, Optional

if TYPE_CHECKING:
    from .entry import Entry

# A layer needs a plan record, a runtime module and one record per distinct structure (plus
# the modules holding them): a few dozen entries for a normal layer, ~1000 for the largest
# ones. 4096 keeps the working set of many such layers (a population of networks), at about
# 1 KB per entry, 4 MB at most.
MAX_ENTRIES = 4096
# Loaded modules, by key. Each C module is built once per cache, so this only caps what a
# process that loads modules from a huge shared cache keeps reachable; modules in use stay
# alive through their kernels, and one dropped here is loaded again in microseconds.
MAX_OBJECTS = 1024

_MISSING = object()


class LruMap:
    """A thread-safe map of at most ``limit`` items that drops the least recently used."""

    __slots__ = ("limit", "_items", "_lock")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable, default: Any = None) -> Any:
        with self._lock:
            value = self._items.get(key, _MISSING)
            if value is _MISSING:
                return default
            self._items.move_to_end(key)
            return value

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._store(key, value)

    def add(self, key: Hashable) -> bool:
        """Use the map as a set: True when ``key`` was not in it (it is now)."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return False
            self._store(key, True)
            return True

    def pop(self, key: Hashable, default: Any = None) -> Any:
        with self._lock:
            return self._items.pop(key, default)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def _store(self, key: Hashable, value: Any) -> None:  # the caller holds the lock
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.limit:
            self._items.popitem(last=False)


@dataclasses.dataclass(frozen=True)
class CacheStats:
    """What one cache instance did since it was created or last reset.

    Attributes
    ----------
    builds : int
        Artifacts this process built (builder calls that were published).
    functions_built : int
        Sum of the builders' ``functions`` counts for those builds.
    disk_hits : int
        Lookups answered from disk (including after waiting for another process's build).
    memory_hits : int
        Lookups and ``recall`` calls answered from this process's memory.
    """

    builds: int = 0
    functions_built: int = 0
    disk_hits: int = 0
    memory_hits: int = 0

    def as_dict(self) -> Dict[str, int]:
        return dataclasses.asdict(self)


def _zero_counts() -> Dict[str, int]:
    return {field.name: 0 for field in dataclasses.fields(CacheStats)}


class MemoryLayer:
    """Bounded, thread-safe maps of entries and loaded objects, plus the statistics."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the counters; each map has its own lock
        self._entries = LruMap(MAX_ENTRIES)
        self._objects = LruMap(MAX_OBJECTS)
        self._touched = LruMap(MAX_ENTRIES)
        self._warned = LruMap(MAX_ENTRIES)
        self._counts = _zero_counts()

    def count(self, **increments: int) -> None:
        # A plain dict: every memory hit counts, and rebuilding the dataclass (asdict
        # deep-copies) cost more than the hit itself.
        with self._lock:
            for name, value in increments.items():
                self._counts[name] += value

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(**self._counts)

    def reset_stats(self) -> None:
        with self._lock:
            self._counts = _zero_counts()

    def entry(self, key: str) -> Optional[Entry]:
        return self._entries.get(key)

    def add_entry(self, entry: Entry) -> None:
        self._entries.put(entry.key, entry)
        self._warned.pop(entry.key)

    def forget(self, key: str) -> None:
        self._entries.pop(key)
        self._objects.pop(key)
        self._touched.pop(key)

    def remember(self, key: str, obj: Any) -> None:
        self._objects.put(key, obj)

    def recall(self, key: str) -> Optional[Any]:
        obj = self._objects.get(key)
        if obj is not None:
            self.count(memory_hits=1)
        return obj

    def first_touch(self, key: str) -> bool:
        """True the first time ``key`` is seen here (or once it has dropped out of the bounded
        record): its last-use time is then refreshed."""
        return self._touched.add(key)

    def first_warning(self, key: str) -> bool:
        """True unless a broken entry for ``key`` was already reported by this instance."""
        return self._warned.add(key)

    def clear(self) -> None:
        for items in (self._entries, self._objects, self._touched, self._warned):
            items.clear()
