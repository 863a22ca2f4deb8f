"""Shared fixtures: every test gets a fresh cache directory and default settings."""
from __future__ import annotations

import pytest

from heterosymnn import config


@pytest.fixture(autouse=True)
def fresh_cache_dir(tmp_path_factory):
    """A private, empty kernel cache for each test (never the user's real cache)."""
    cache_dir = tmp_path_factory.mktemp("cache")
    with config.override(cache_dir=str(cache_dir)):
        yield cache_dir
