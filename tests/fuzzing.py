"""Example budgets for property tests under the ``ci`` and ``long`` Hypothesis profiles,
and the time limit that turns a hang on untrusted input into a test failure.

A test states how many examples it can afford in the default (``ci``) run;
``--hypothesis-profile=long`` multiplies that, so one flag turns every
property test into a long by-hand run without editing the tests.
``HETEROSYMNN_LONG_FACTOR=N`` sets the multiplier (25 by default) for a
long run that has to fit a time budget.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from typing import Iterator

import pytest
from hypothesis import settings

LONG_RUN_FACTOR = int(os.environ.get("HETEROSYMNN_LONG_FACTOR", "25"))


def long_run() -> bool:
    """True under ``--hypothesis-profile=long`` (the only profile that is not derandomised)."""
    return not settings.default.derandomize


def examples(ci_count: int) -> int:
    """``ci_count`` examples in a CI run, ``LONG_RUN_FACTOR`` times as many in a long run."""
    return ci_count * LONG_RUN_FACTOR if long_run() else ci_count


@contextlib.contextmanager
def deadline(seconds: float, what: object) -> Iterator[None]:
    """Turn a hang into a failure naming ``what`` (SIGALRM on the POSIX main thread; elsewhere
    only the elapsed-time assert at the end remains). ``what`` is described only on failure."""
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()

    def expired(signum, frame):
        # pytest.fail raises a BaseException: a broad ``except Exception`` in the library (one that
        # turns a SymPy failure into a fallback) cannot swallow it and let the hang go on, and
        # Hypothesis still counts it as a failure to shrink and report.
        pytest.fail(f"still running after {seconds} s: {_described(what)}")

    if usable:
        previous = signal.signal(signal.SIGALRM, expired)
        signal.setitimer(signal.ITIMER_REAL, seconds)
    start = time.perf_counter()
    try:
        yield
    finally:
        if usable:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    assert time.perf_counter() - start < seconds, f"took over {seconds} s: {_described(what)}"


def _described(what: object) -> str:
    if isinstance(what, str):
        return what
    try:
        return f"{what!r:.200}"
    except ValueError:  # an int beyond Python's digit limit for str()
        return f"<a {type(what).__name__} too large to print>"
