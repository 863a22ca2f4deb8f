"""Many processes on one cache: one build per key, killed builders, lock timeouts."""
from __future__ import annotations

import json
import os
import time

import pytest

from heterosymnn.cache import KernelCache, cache_info, clear
from heterosymnn.config import override
from heterosymnn.errors import CacheError

from cache_helpers import file_builder, key_for, read_log, start_worker, wait_for_file

N_PROCESSES = 8


def test_cold_start_race_builds_exactly_once(cache_dir, tmp_path):
    key = key_for("race")
    go, ready = tmp_path / "go", tmp_path / "ready"
    ready.mkdir()
    procs = [start_worker(cache_dir, "build", key, str(ready), str(go), "0.3") for _ in range(N_PROCESSES)]
    deadline = time.monotonic() + 60
    while len(os.listdir(ready)) < N_PROCESSES and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()  # a cold cache, and everyone asking for the same kernel at once
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        results.append(json.loads(out))

    cache = KernelCache(cache_dir)
    log = read_log(cache)
    assert len(log) == 1 and log[0]["key"] == key and log[0]["functions"] == 3
    assert sum(r["stats"]["builds"] for r in results) == 1
    assert sum(r["stats"]["disk_hits"] for r in results) == N_PROCESSES - 1
    assert len({r["path"] for r in results}) == 1
    assert len({r["sha256"] for r in results}) == 1
    assert len({r["built_by"] for r in results}) == 1  # everyone uses the winner's artifact
    assert os.listdir(cache.root / "tmp") == []


def test_builder_killed_mid_build_leaves_nothing_usable(cache_dir, tmp_path):
    key = key_for("killed")
    ready = tmp_path / "ready"
    proc = start_worker(cache_dir, "die-mid-build", key, str(ready))
    try:
        wait_for_file(ready, proc, timeout=30.0)
        cache = KernelCache(cache_dir)
        assert cache.lookup(key) is None  # the half-written build directory is invisible
        leftovers = os.listdir(cache.root / "tmp")
        assert len(leftovers) == 1 and leftovers[0].startswith(key)
    finally:
        proc.kill()  # SIGKILL on POSIX: no cleanup code runs in the child
        proc.communicate(timeout=30)

    # The leftover directory is reported as stale and removed by clear() once old
    # (a rebuild of the same key would remove it too, see test_cache_faults.py).
    stale = cache.root / "tmp" / leftovers[0]
    old = time.time() - 3600
    os.utime(stale, (old, old))
    assert cache_info(cache_dir)["stale_temp_dirs"] == 1
    report = clear(cache_dir)
    assert report["temp_removed"] == 1 and not stale.exists()

    # The OS released the dead builder's lock: this build does not wait for it.
    with override(lock_timeout=5.0):
        started = time.monotonic()
        calls = []
        entry = cache.build(key, file_builder(calls=calls))
    assert time.monotonic() - started < 4.0
    assert len(calls) == 1 and entry.file("kernel.so").read_bytes() == b"artifact" * 64
    assert str(entry.path) not in str(leftovers)
    assert [r["key"] for r in read_log(cache)] == [key]  # the dead build logged nothing


def test_lock_timeout_names_the_lock_file_and_the_setting(cache_dir, tmp_path):
    key = key_for("held")
    ready = tmp_path / "ready"
    proc = start_worker(cache_dir, "hold", key, str(ready))
    try:
        wait_for_file(ready, proc, timeout=30.0)
        cache = KernelCache(cache_dir)
        calls = []
        with override(lock_timeout=0.3):
            started = time.monotonic()
            with pytest.raises(CacheError) as info:
                cache.build(key, file_builder(calls=calls))
        assert time.monotonic() - started < 5.0
        message = str(info.value)
        assert str(cache.root / "locks" / key[:2] / f"{key}.lock") in message
        assert "HETEROSYMNN_LOCK_TIMEOUT" in message
        assert calls == []
        assert cache_info(cache_dir)["locks_held"] == 1
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    assert cache.build(key, file_builder()).file("kernel.so").exists()
