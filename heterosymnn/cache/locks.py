"""Per-key locks that exclude other processes *and* other threads of this one.

``filelock.FileLock`` excludes processes (the OS releases the lock when its
holder dies, so a killed build never wedges the cache). Within one process we
keep exactly one lock object per path, guarded by a re-entrant thread lock:

* re-entrant: a caller holding several keys through :func:`hold_many` can call
  ``build()`` on one of them without deadlocking on itself;
* thread-exclusive: two threads of one process building the same key take turns
  (with a second ``FileLock`` object on the same path, a thread could block on
  its own process's lock forever).
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Dict, Iterable, Iterator, Optional

import filelock

from ..errors import CacheError

log = logging.getLogger("heterosymnn.cache")

# How long to wait silently before saying that another process is building.
_QUIET_WAIT_S = 1.0


class _PathLock:
    __slots__ = ("path", "thread_lock", "file_lock")

    def __init__(self, path: str) -> None:
        self.path = path
        self.thread_lock = threading.RLock()
        self.file_lock = filelock.FileLock(path)


_registry: Dict[str, _PathLock] = {}
_registry_guard = threading.Lock()


def _reset_after_fork() -> None:
    # A forked child must not inherit lock objects that a parent thread held at
    # fork time: fresh ones contend with the parent through the OS, as they should.
    global _registry_guard
    _registry.clear()
    _registry_guard = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _path_lock(path: Path) -> _PathLock:
    name = os.path.abspath(path)
    with _registry_guard:
        lock = _registry.get(name)
        if lock is None:
            lock = _registry[name] = _PathLock(name)
        return lock


def _timeout_error(path: str, timeout: float) -> CacheError:
    return CacheError(
        f"timed out after {timeout:g} s waiting for the kernel cache lock {path}: another process "
        f"(or thread) is building the same kernel and has not finished. Wait for it, or raise "
        f"the limit with HETEROSYMNN_LOCK_TIMEOUT (seconds; a negative value waits forever)."
    )


@contextlib.contextmanager
def hold(path: Path, timeout: float, what: str = "") -> Iterator[None]:
    """Hold the lock at ``path`` (creating its folder) for the ``with`` block.

    Parameters
    ----------
    path : Path
        The lock file.
    timeout : float
        Seconds to wait in all; negative waits forever, 0 tries once.
    what : str
        Words for the progress message logged when the wait is long.

    Raises
    ------
    CacheError
        On timeout; the message names the lock file and HETEROSYMNN_LOCK_TIMEOUT.
    OSError
        If the lock file cannot be created (an unusable cache directory).
    """
    lock = _path_lock(path)
    forever = timeout < 0 or timeout >= threading.TIMEOUT_MAX
    deadline = None if forever else time.monotonic() + timeout
    if not lock.thread_lock.acquire(timeout=-1 if deadline is None else timeout):
        raise _timeout_error(lock.path, timeout)
    try:
        os.makedirs(os.path.dirname(lock.path), exist_ok=True)
        _acquire_file_lock(lock, deadline, timeout, what)
        try:
            yield
        finally:
            lock.file_lock.release()
    finally:
        lock.thread_lock.release()


def _acquire_file_lock(lock: _PathLock, deadline: Optional[float], timeout: float, what: str) -> None:
    try:
        lock.file_lock.acquire(timeout=_QUIET_WAIT_S if deadline is None else min(_QUIET_WAIT_S, _left(deadline)))
        return
    except filelock.Timeout:
        pass
    if deadline is not None and _left(deadline) <= 0:
        raise _timeout_error(lock.path, timeout)
    log.info("waiting for another process %s (lock %s)", what or "using the same cache entry", lock.path)
    try:
        lock.file_lock.acquire(timeout=-1 if deadline is None else _left(deadline))
    except filelock.Timeout:
        raise _timeout_error(lock.path, timeout) from None


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.0)


@contextlib.contextmanager
def hold_many(paths: Iterable[Path], timeout: float, what: str = "") -> Iterator[None]:
    """Hold several locks, taken in sorted order so that two callers never deadlock."""
    with contextlib.ExitStack() as stack:
        for path in sorted({os.path.abspath(p) for p in paths}):
            stack.enter_context(hold(Path(path), timeout, what))
        yield


def try_hold(path: Path) -> contextlib.AbstractContextManager:
    """Like :func:`hold` without waiting; raises ``CacheError`` if the lock is taken."""
    return hold(path, 0.0)
