"""Fixtures for the cache tests: a fresh cache directory per test."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The helpers module sits next to this file; make it importable whatever
# pytest's import mode is.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

from heterosymnn.cache import KernelCache  # noqa: E402
from heterosymnn.config import override  # noqa: E402


@pytest.fixture
def cache_dir(tmp_path: Path):
    """A fresh, empty cache directory, made the configured one for the test."""
    root = tmp_path / "cache"
    with override(cache_dir=str(root), lock_timeout=30.0):
        yield root


@pytest.fixture
def cache(cache_dir: Path) -> KernelCache:
    return KernelCache(cache_dir)
