"""Dask integration: workers that start with a warm kernel cache.

Install with ``pip install heterosymnn[dask]``. Importing :mod:`heterosymnn`
never imports Dask; this package does, and says which extra to install when
Dask is missing.

>>> from heterosymnn.distributed import WarmCache          # doctest: +SKIP
>>> client.register_plugin(WarmCache("layers.hsb"))        # doctest: +SKIP
"""
from __future__ import annotations

try:
    import distributed  # noqa: F401 - the check that the extra is installed
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        f"heterosymnn.distributed needs Dask's distributed scheduler ({exc}). "
        f"Fix: pip install 'heterosymnn[dask]'") from exc

from .plugin import WarmCache, scratch_cache_dir

__all__ = ["WarmCache", "scratch_cache_dir"]
