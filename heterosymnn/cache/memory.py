"""The per-process layer of the cache: known entries, loaded objects, counters."""
from __future__ import annotations

import dataclasses
import threading
from typing import Any, Dict, Optional, Set

from .entry import Entry


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


class MemoryLayer:
    """Thread-safe maps of entries and loaded objects, plus the statistics."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: Dict[str, Entry] = {}
        self._objects: Dict[str, Any] = {}
        self._touched: Set[str] = set()
        self._warned: Set[str] = set()
        self._counts = CacheStats()

    def count(self, **increments: int) -> None:
        with self._lock:
            fields = self._counts.as_dict()
            for name, value in increments.items():
                fields[name] += value
            self._counts = CacheStats(**fields)

    def stats(self) -> CacheStats:
        return self._counts

    def reset_stats(self) -> None:
        with self._lock:
            self._counts = CacheStats()

    def entry(self, key: str) -> Optional[Entry]:
        return self._entries.get(key)

    def add_entry(self, entry: Entry) -> None:
        with self._lock:
            self._entries[entry.key] = entry
            self._warned.discard(entry.key)

    def forget(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)
            self._objects.pop(key, None)
            self._touched.discard(key)

    def remember(self, key: str, obj: Any) -> None:
        with self._lock:
            self._objects[key] = obj

    def recall(self, key: str) -> Optional[Any]:
        obj = self._objects.get(key)
        if obj is not None:
            self.count(memory_hits=1)
        return obj

    def first_touch(self, key: str) -> bool:
        """True the first time ``key`` is seen here: its last-use time is then refreshed."""
        with self._lock:
            if key in self._touched:
                return False
            self._touched.add(key)
            return True

    def first_warning(self, key: str) -> bool:
        """True unless a broken entry for ``key`` was already reported by this instance."""
        with self._lock:
            if key in self._warned:
                return False
            self._warned.add(key)
            return True

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._objects.clear()
            self._touched.clear()
            self._warned.clear()
