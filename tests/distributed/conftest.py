"""Fixtures of the Dask tests: local clusters bound to 127.0.0.1 only.

Worker processes are spawned: they get this process's ``sys.path`` (so they can
import the helpers and the example by name) and its environment.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("distributed")

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parents[1] / "examples"
for folder in (HERE, EXAMPLES):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


@pytest.fixture
def worker_env(monkeypatch, fresh_cache_dir):
    """Spawned workers inherit the environment: point them at the test's cache, not the user's."""
    monkeypatch.setenv("HETEROSYMNN_CACHE_DIR", str(fresh_cache_dir))
    return fresh_cache_dir
