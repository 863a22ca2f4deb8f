"""Example budgets for property tests under the ``ci`` and ``long`` Hypothesis profiles.

A test states how many examples it can afford in the default (``ci``) run;
``--hypothesis-profile=long`` multiplies that, so one flag turns every
property test into a long by-hand run without editing the tests.
"""
from __future__ import annotations

from hypothesis import settings

LONG_RUN_FACTOR = 25


def long_run() -> bool:
    """True under ``--hypothesis-profile=long`` (the only profile that is not derandomised)."""
    return not settings.default.derandomize


def examples(ci_count: int) -> int:
    """``ci_count`` examples in a CI run, ``LONG_RUN_FACTOR`` times as many in a long run."""
    return ci_count * LONG_RUN_FACTOR if long_run() else ci_count
