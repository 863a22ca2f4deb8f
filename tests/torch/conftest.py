"""Fixtures of the PyTorch layer tests.

These tests check the layers, not the cache: they share one kernel cache per
run (a private temporary directory, never the user's), so each formula set is
compiled once for the whole folder instead of once per test.

No ``__init__.py`` here on purpose: ``tests`` is on ``sys.path`` and a
``tests/torch`` package would shadow PyTorch itself.
"""
from __future__ import annotations

import pytest

from heterosymnn import config


@pytest.fixture(scope="session")
def _torch_cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("torch-cache")


@pytest.fixture(autouse=True)
def fresh_cache_dir(_torch_cache_dir):
    """Overrides the suite's per-test cache: one private cache shared by the torch tests."""
    with config.override(cache_dir=str(_torch_cache_dir)):
        yield _torch_cache_dir
