"""Cache stage of heterosymnn: source -> built artifact, shared by every process.

* :func:`cache_key` - the one function that names an artifact;
* :class:`KernelCache` - lookup, locked build, atomic publish, memory layer;
* :func:`default_cache`, :func:`stats`, :func:`reset_stats` - the process-wide
  cache for the configured directory;
* :func:`cache_info`, :func:`list_entries`, :func:`clear`, :func:`prune` - what
  ``python -m heterosymnn.cache`` does.
"""
from __future__ import annotations

from .entry import Entry
from .key import CACHE_SCHEMA, CODEGEN_VERSION, cache_key
from .manage import cache_info, clear, list_entries, parse_size, prune
from .memory import CacheStats
from .store import Builder, KernelCache, default_cache, reset_stats, stats

__all__ = [
    "CACHE_SCHEMA",
    "CODEGEN_VERSION",
    "Builder",
    "CacheStats",
    "Entry",
    "KernelCache",
    "cache_info",
    "cache_key",
    "clear",
    "default_cache",
    "list_entries",
    "parse_size",
    "prune",
    "reset_stats",
    "stats",
]
