"""Fixtures of the scikit-learn estimator tests.

These tests check the estimators, not the cache: like the PyTorch layer tests
they share one kernel cache per run (a private temporary directory, never the
user's), so each formula set is compiled once for the folder, not once per test.

No ``__init__.py`` here on purpose: ``tests`` is on ``sys.path`` and a
``tests/sklearn`` package would shadow scikit-learn itself.
"""
from __future__ import annotations

import pytest

from heterosymnn import config



@pytest.fixture(scope="session")
def _sklearn_cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("sklearn-cache")


@pytest.fixture(autouse=True)
def fresh_cache_dir(_sklearn_cache_dir):
    """Overrides the suite's per-test cache: one private cache shared by the scikit-learn tests."""
    with config.override(cache_dir=str(_sklearn_cache_dir)):
        yield _sklearn_cache_dir
