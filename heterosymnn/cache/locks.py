"""Per-key locks that exclude other processes *and* other threads of this one.

Across processes the lock is an OS lock on a small file, which the OS releases
when its holder dies, so a killed build never wedges the cache. Within one
process there is exactly one lock object per path in use (dropped when no
thread holds or waits for it), guarded by a re-entrant thread lock:

* re-entrant: a caller holding several keys through :func:`hold_many` can call
  ``build()`` on one of them without deadlocking on itself;
* thread-exclusive: two threads of one process building the same key take turns.

Lock files do not pile up: on POSIX the last release *unlinks* the file while
still holding the lock. Deleting a locked file is only safe with the check
that :func:`_flock` makes after every acquisition: a process that locked a
file which is no longer the one named by the path (its holder unlinked it
meanwhile) holds nothing and retries. Only a holder ever unlinks, and a new
file appears at the path only when none is there, so from its check until it
unlinks, the holder's file is the one the path names, and anyone else who
locks a file in that time either waits for it or sees that its file is stale.
On Windows ``filelock.FileLock`` is used as it is: a file that another
process has open cannot be deleted there, and filelock removes it on release
when nobody does.
"""
from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, Optional

from ..errors import CacheError
from ..deferred import get_logger

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

log = get_logger("heterosymnn.cache")

# How long to wait silently before saying that another process is building.
_QUIET_WAIT_S = 1.0
# Polling between attempts on a taken lock: starts short (most holds are brief)
# and backs off, with jitter so that waiters do not retry in lock step.
_FIRST_POLL_S = 0.001
_MAX_POLL_S = 0.05
_CONTENTION = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES})


class _PathLock:
    __slots__ = ("path", "thread_lock", "depth", "held", "users")

    def __init__(self, path: str) -> None:
        self.path = path
        self.thread_lock = threading.RLock()
        self.depth = 0  # nested holds by the thread owning thread_lock
        self.held: Any = None  # the OS-level lock (an fd, or a FileLock) while depth > 0
        self.users = 0  # holds in progress or waiting, in every thread (guarded by _registry_guard)


# Only the locks in use: a long run takes thousands of distinct keys' locks (every new
# layer plan has one), and keeping an object per path ever locked would grow without end.
_registry: Dict[str, _PathLock] = {}
_registry_guard = threading.Lock()


def _reset_after_fork() -> None:
    # A forked child must not inherit lock objects that a parent thread held at
    # fork time: fresh ones contend with the parent through the OS, as they should.
    # Closing the inherited descriptors does not release the parent's flock.
    global _registry_guard
    for lock in _registry.values():
        if isinstance(lock.held, int):
            with contextlib.suppress(OSError):
                os.close(lock.held)
    _registry.clear()
    _registry_guard = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _path_lock(path: Path) -> _PathLock:
    """The one lock object of ``path``, counted as used until :func:`_check_in`."""
    name = os.path.abspath(path)
    with _registry_guard:
        lock = _registry.get(name)
        if lock is None:
            lock = _registry[name] = _PathLock(name)
        lock.users += 1
        return lock


def _check_in(lock: _PathLock) -> None:
    # Dropped only when no thread holds or waits for it: a thread that comes later
    # creates a fresh object, which is then the only one, as no other is in use.
    with _registry_guard:
        lock.users -= 1
        if lock.users == 0 and _registry.get(lock.path) is lock:  # not after a fork's reset
            del _registry[lock.path]


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
    try:
        forever = timeout < 0 or timeout >= threading.TIMEOUT_MAX
        deadline = None if forever else time.monotonic() + timeout
        if not lock.thread_lock.acquire(timeout=-1 if deadline is None else timeout):
            raise _timeout_error(lock.path, timeout)
        try:
            if lock.depth == 0:
                lock.held = _acquire(lock.path, deadline, timeout, what)
            lock.depth += 1
            try:
                yield
            finally:
                lock.depth -= 1
                if lock.depth == 0:
                    held, lock.held = lock.held, None
                    _release(lock.path, held)
        finally:
            lock.thread_lock.release()
    finally:
        _check_in(lock)


def _acquire(path: str, deadline: Optional[float], timeout: float, what: str) -> Any:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    started, pause, said = time.monotonic(), _FIRST_POLL_S, False
    while True:
        held = _try_acquire(path)
        if held is not None:
            return held
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            raise _timeout_error(path, timeout)
        if not said and now - started >= _QUIET_WAIT_S:
            log.info("waiting for another process %s (lock %s)", what or "using the same cache entry", path)
            said = True
        import random  # only when waiting (~1.5 ms to import, on every warm start otherwise)

        sleep = pause * random.uniform(0.5, 1.5)
        time.sleep(sleep if deadline is None else min(sleep, max(deadline - now, 0.0)))
        pause = min(pause * 2, _MAX_POLL_S)


def _try_acquire(path: str) -> Any:
    """The OS-level lock of ``path`` if it is free now, else ``None``."""
    if fcntl is None:
        return _try_filelock(path)
    while True:  # a stale file (unlinked by its last holder) is not contention: retry at once
        fd = _open_lock_file(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in _CONTENTION:
                return None
            raise
        if _names(path, fd):
            return fd
        os.close(fd)  # releases the flock on a file nobody will ever look at again


def _open_lock_file(path: str) -> int:
    # Not inheritable (Python's default): a compiler child must not keep the lock alive.
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except FileNotFoundError:  # the shard folder was deleted by hand meanwhile
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


def _names(path: str, fd: int) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (current.st_dev, current.st_ino)


def _release(path: str, held: Any) -> None:
    if not isinstance(held, int):
        held.release()  # filelock (Windows) removes the file itself when no one has it open
        return
    try:
        # Unlinked while still held: see the module docstring for why this is safe.
        with contextlib.suppress(OSError):
            os.unlink(path)
        fcntl.flock(held, fcntl.LOCK_UN)  # explicit: a forked child may share the descriptor
    finally:
        os.close(held)


def _try_filelock(path: str) -> Any:
    import filelock

    lock = filelock.FileLock(path)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        return None
    return lock


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
