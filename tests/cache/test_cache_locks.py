"""Per-key locks: exclusion across processes while lock files are deleted on release."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from heterosymnn.cache import KernelCache, cache_info, clear, locks
from heterosymnn.errors import CacheError

from cache_helpers import key_for, start_lock_holder, subprocess_env

posix_only = pytest.mark.skipif(os.name == "nt", reason="Windows keeps filelock's own lock files")

# Each process adds 1 to a counter file N times under the lock, slowly enough that
# an unguarded read-modify-write would lose updates.
_COUNTER = """
import sys, time
from pathlib import Path
from heterosymnn.cache import locks
lock, counter, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
for _ in range(n):
    with locks.hold(lock, 60.0):
        value = int(counter.read_text())
        time.sleep(0.001)
        counter.write_text(str(value + 1))
"""


@posix_only
def test_lock_file_exists_only_while_held_even_when_nested(tmp_path):
    path = tmp_path / "locks" / "ab" / "key.lock"
    with locks.hold(path, 1.0):
        assert path.exists()
        with locks.hold(path, 1.0):  # re-entrant
            pass
        assert path.exists()
    assert not path.exists()


@posix_only
def test_processes_exclude_each_other_while_lock_files_come_and_go(tmp_path):
    lock, counter = tmp_path / "locks" / "k.lock", tmp_path / "counter"
    counter.write_text("0")
    script = tmp_path / "counter.py"
    script.write_text(_COUNTER)
    procs = [subprocess.Popen([sys.executable, str(script), str(lock), str(counter), "40"],
                              env=subprocess_env(tmp_path / "cache"), stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read()
    assert counter.read_text() == str(4 * 40)  # no update lost: never two holders at once
    assert not lock.exists()


@posix_only
def test_a_file_unlinked_by_its_last_holder_is_not_taken_as_the_lock(tmp_path, monkeypatch):
    # The race the protocol guards against: a waiter opens the lock file, the holder
    # unlinks it and releases, the waiter locks the orphaned file. It must notice and retry.
    path = tmp_path / "k.lock"
    real_open, opened = locks._open_lock_file, []

    def open_then_lose_the_race(name: str) -> int:
        fd = real_open(name)
        if not opened:
            os.unlink(name)  # what the previous holder does just before releasing
        opened.append(fd)
        return fd

    monkeypatch.setattr(locks, "_open_lock_file", open_then_lose_the_race)
    with locks.hold(path, 1.0):
        assert len(opened) == 2  # the orphaned file was let go, the path opened again
        assert os.fstat(locks._path_lock(path).held).st_ino == os.stat(path).st_ino
    assert not path.exists()


def test_a_held_lock_times_out_and_names_the_file(tmp_path, cache_dir):
    key = key_for("held-lock")
    ready = tmp_path / "ready"
    holder = start_lock_holder(cache_dir, key, ready)
    try:
        lock = Path(cache_info(cache_dir)["directory"]) / "locks" / key[:2] / f"{key}.lock"
        with pytest.raises(CacheError, match=str(lock)):
            with locks.try_hold(lock):
                pass
    finally:
        holder.kill()
        holder.communicate(timeout=30)


@posix_only
def test_clear_removes_the_lock_file_of_a_killed_holder(tmp_path, cache_dir):
    key = key_for("killed-holder")
    ready = tmp_path / "ready"
    holder = start_lock_holder(cache_dir, key, ready)
    holder.kill()  # SIGKILL: no release code runs, the file stays
    holder.communicate(timeout=30)
    [lock] = KernelCache(cache_dir).layout.locks.glob("*/*.lock")  # (cache_info would probe, so delete, it)
    assert clear(cache_dir)["locks_removed"] == 1
    assert not lock.exists()
