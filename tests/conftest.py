"""Shared fixtures: every test gets a fresh cache directory and default settings.

Property tests run under a Hypothesis profile: ``ci`` (the default) is
derandomised and short so the suite stays a few minutes and a red run can be
replayed exactly; ``--hypothesis-profile=long`` draws fresh random examples,
many more of them, for a by-hand run.
"""
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from heterosymnn import config

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "long",
    derandomize=False,
    deadline=None,
    print_blob=True,
    max_examples=2000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile("ci")

# Build counts asserted by the tests (one compiler run for up to 24 new functions) must not depend
# on the machine's core count; the tests of the parallel split set the number of runs themselves.
# In the environment, so that the worker processes the tests start inherit it.
os.environ.setdefault("HETEROSYMNN_BUILD_JOBS", "1")


@pytest.fixture(autouse=True)
def fresh_cache_dir(tmp_path_factory):
    """A private, empty kernel cache for each test (never the user's real cache)."""
    cache_dir = tmp_path_factory.mktemp("cache")
    with config.override(cache_dir=str(cache_dir)):
        yield cache_dir
