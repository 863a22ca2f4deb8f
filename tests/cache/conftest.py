"""Fixtures for the cache tests: a fresh cache directory per test."""
from __future__ import annotations

from pathlib import Path

import pytest

from heterosymnn.cache import KernelCache
from heterosymnn.config import override


@pytest.fixture
def cache_dir(tmp_path: Path):
    """A fresh, empty cache directory, made the configured one for the test."""
    root = tmp_path / "cache"
    with override(cache_dir=str(root), lock_timeout=30.0):
        yield root


@pytest.fixture
def cache(cache_dir: Path) -> KernelCache:
    return KernelCache(cache_dir)
