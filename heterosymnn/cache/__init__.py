"""Cache stage of heterosymnn: source -> built artifact, shared by every process.

* :func:`cache_key` - the one function that names an artifact;
* :class:`KernelCache` - lookup, locked build, atomic publish, memory layer;
* :func:`default_cache`, :func:`stats`, :func:`reset_stats` - the process-wide
  cache for the configured directory;
* :func:`cache_info`, :func:`list_entries`, :func:`clear`, :func:`prune` - what
  ``python -m heterosymnn.cache`` does;
* :func:`export_bundle`, :func:`import_bundle` - portable bundles of entries.
"""
from __future__ import annotations

from ..deferred import lazy_exports
from .entry import Entry
from .key import CACHE_SCHEMA, CODEGEN_VERSION, cache_key
from .memory import CacheStats
from .store import Builder, KernelCache, default_cache, reset_stats, stats

__all__ = [
    "CACHE_SCHEMA",
    "CODEGEN_VERSION",
    "Builder",
    "BundleError",
    "CacheStats",
    "Entry",
    "ExportReport",
    "ImportReport",
    "KernelCache",
    "cache_info",
    "cache_key",
    "clear",
    "default_cache",
    "export_bundle",
    "import_bundle",
    "list_entries",
    "parse_size",
    "prune",
    "reset_stats",
    "stats",
]

# Bundles and the management commands are loaded on first use: a process that
# only runs kernels never imports tarfile (bundles) nor the pruning code.
_LAZY_NAMES = {"BundleError": "bundle_format", "ExportReport": "bundle", "ImportReport": "bundle",
               "export_bundle": "bundle", "import_bundle": "bundle",
               "cache_info": "manage", "clear": "manage", "list_entries": "manage", "parse_size": "manage",
               "prune": "manage"}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY_NAMES, globals())
