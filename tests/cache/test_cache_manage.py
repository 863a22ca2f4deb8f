"""info / list / clear / prune, from Python and from ``python -m heterosymnn.cache``."""
from __future__ import annotations

import ctypes
import json
import os
import re
import sys
import time
import warnings

import pytest

from heterosymnn.cache import KernelCache, cache_info, clear, list_entries, parse_size, prune
from heterosymnn.cache.__main__ import main

from cache_helpers import file_builder, key_for, read_log, run_cli, start_worker

SIZE = 10_000


def _populate(cache, names):
    """Entries of about SIZE bytes each, used in the order of ``names`` (oldest first)."""
    keys = {}
    now = time.time()
    for age, name in enumerate(reversed(names)):
        entry = cache.build(key_for(name), file_builder(content=bytes(SIZE)))
        stamp = now - 1000 * (age + 1)
        os.utime(entry.path, (stamp, stamp))
        keys[name] = entry.key
    return keys


@pytest.mark.parametrize("text, value", [
    ("1024", 1024), ("0", 0), ("500M", 500 * 1024 ** 2), ("2G", 2 * 1024 ** 3), ("10k", 10240),
    ("1.5G", int(1.5 * 1024 ** 3)), ("64MiB", 64 * 1024 ** 2), ("3 KB", 3072),
])
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "-1", "12Q", "M", "1e9", "5 G B"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError, match="500M"):
        parse_size(text)


def test_info_and_list(cache, cache_dir):
    keys = _populate(cache, ["a", "b"])
    info = cache_info(cache_dir)
    assert info["directory"] == str(cache.root) and info["exists"]
    assert info["entries"] == 2 and info["builds_logged"] == 2
    assert info["entries_bytes"] > 2 * SIZE and info["size_bytes"] >= info["entries_bytes"]
    assert info["stale_temp_dirs"] == 0 and info["locks_held"] == 0
    rows = list_entries(cache_dir)
    assert [r["key"] for r in rows] == [keys["a"], keys["b"]]  # least recently used first
    assert all(r["status"] == "ok" and r["metadata"]["toolchain"] == "fake-cc 1.0" for r in rows)


def test_info_on_a_cache_that_does_not_exist_creates_nothing(tmp_path):
    info = cache_info(tmp_path / "nothing")
    assert info["entries"] == 0 and not info["exists"]
    assert not (tmp_path / "nothing").exists()


def test_prune_removes_least_recently_used_first(cache, cache_dir):
    keys = _populate(cache, ["old", "mid", "new"])
    sizes = {r["key"]: r["size_bytes"] for r in list_entries(cache_dir)}
    report = prune(sizes[keys["mid"]] + sizes[keys["new"]], cache_dir)
    assert report["removed"] == 1 and report["freed_bytes"] == sizes[keys["old"]]
    assert [r["key"] for r in list_entries(cache_dir)] == [keys["mid"], keys["new"]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a pruned entry is a plain miss, not a "damaged" one
        assert KernelCache(cache_dir).lookup(keys["old"]) is None


def test_lookup_refreshes_last_use(cache, cache_dir):
    keys = _populate(cache, ["a", "b"])
    assert KernelCache(cache_dir).lookup(keys["a"]) is not None  # "a" is now the most recent
    prune(list_entries(cache_dir)[-1]["size_bytes"], cache_dir)
    assert [r["key"] for r in list_entries(cache_dir)] == [keys["a"]]


def test_prune_to_zero_and_bad_limit(cache, cache_dir):
    _populate(cache, ["a", "b"])
    assert prune(0, cache_dir)["remaining_bytes"] == 0
    assert list_entries(cache_dir) == []
    with pytest.raises(ValueError):
        prune(-1, cache_dir)


def test_clear_removes_entries_keeps_the_log_and_spares_locked_ones(cache, cache_dir, tmp_path):
    keys = _populate(cache, ["a", "b"])
    ready = tmp_path / "ready"
    holder = start_worker(cache_dir, "hold", keys["b"], str(ready))
    try:
        while not ready.exists():
            assert holder.poll() is None, holder.communicate()
            time.sleep(0.01)
        report = clear(cache_dir, lock_timeout=0.2)
    finally:
        holder.kill()
        holder.communicate(timeout=30)
    assert report["removed"] == 1 and len(report["skipped"]) == 1 and "lock" in report["skipped"][0]
    assert [r["key"] for r in list_entries(cache_dir)] == [keys["b"]]
    assert clear(cache_dir)["removed"] == 1 and list_entries(cache_dir) == []
    log = read_log(cache)  # the builds stay logged, and each removal is logged after them
    assert [r.get("event") for r in log] == [None, None, "removed", "removed"]
    assert [r["key"] for r in log[2:]] == [keys["a"], keys["b"]] and {r["by"] for r in log[2:]} == {"clear"}


def _loaded_libm():
    # A real shared library to load from an entry: the C math library this
    # interpreter has mapped (no compiler needed).
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if len(line.split()) >= 6}
    except OSError:
        return None
    return next((p for p in sorted(paths) if re.search(r"/libm[.-][^/]*so", p)), None)


@pytest.mark.skipif(sys.platform != "linux", reason="Linux semantics: a loaded library may be unlinked")
def test_clear_does_not_break_a_process_using_a_loaded_entry(cache, cache_dir):
    libm = _loaded_libm()
    if libm is None:
        pytest.skip("no libm mapped in this process")
    entry = cache.publish(key_for("libm"), {"libkernel.so": libm}, {"functions": 1})
    lib = ctypes.CDLL(str(entry.file("libkernel.so")))
    lib.cos.restype, lib.cos.argtypes = ctypes.c_double, [ctypes.c_double]
    assert clear(cache_dir)["removed"] == 1 and not entry.path.exists()
    assert lib.cos(0.0) == 1.0  # still mapped and callable after its files are gone
    assert cache.lookup(entry.key) is None


def test_clear_skips_an_entry_in_use_on_windows(cache, cache_dir, monkeypatch, capsys):
    # Windows refuses to move or delete a directory holding a loaded DLL.
    keys = _populate(cache, ["a"])
    real_replace = os.replace

    def replace(src, dst):
        if keys["a"] in os.fspath(src) and "entries" in os.fspath(src):
            raise PermissionError(13, "Access is denied", os.fspath(src))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    assert main(["--cache-dir", str(cache_dir), "clear"]) == 1
    assert "in use" in capsys.readouterr().err
    assert len(list_entries(cache_dir)) == 1


def test_cli_end_to_end(cache, cache_dir, capsys):
    # Real processes configured by HETEROSYMNN_CACHE_DIR, as a user runs it ...
    keys = _populate(cache, ["a", "b"])
    info = run_cli(cache_dir, "info", "--json")
    assert info.returncode == 0
    data = json.loads(info.stdout)
    assert data["directory"] == str(cache.root)
    assert data["entries"] == 2 and data["builds_logged"] == 2 and data["size_bytes"] > 2 * SIZE

    listing = run_cli(cache_dir, "list")
    lines = listing.stdout.splitlines()
    assert listing.returncode == 0 and len(lines) == 2
    assert lines[0].startswith(keys["a"]) and "toolchain=fake-cc 1.0" in lines[0]

    pruned = run_cli(cache_dir, "prune", "--max-size", "15K")
    assert pruned.returncode == 0 and "removed 1 entries" in pruned.stdout
    assert [r["key"] for r in list_entries(cache_dir)] == [keys["b"]]

    # ... and the same entry point in-process (faster) for the other commands.
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert str(cache.root) in out and "entries:        1" in out
    assert main(["list", "--json"]) == 0
    assert [r["key"] for r in json.loads(capsys.readouterr().out)] == [keys["b"]]
    assert main(["clear"]) == 0
    assert "removed 1 entries" in capsys.readouterr().out
    assert list_entries(cache_dir) == []


@pytest.mark.parametrize("argv, message", [
    ([], "usage"),
    (["prune"], "--max-size"),
    (["prune", "--max-size", "12Q"], "invalid size"),
    (["frobnicate"], "invalid choice"),
])
def test_cli_usage_errors_exit_2(cache_dir, capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_cli_usage_error_from_a_real_process(cache_dir):
    result = run_cli(cache_dir, "prune", "--max-size", "lots")
    assert result.returncode == 2 and "invalid size 'lots'" in result.stderr


def test_cli_cache_dir_option(cache, cache_dir, capsys, tmp_path):
    _populate(cache, ["a"])
    assert main(["--cache-dir", str(cache_dir), "info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["entries"] == 1
    assert main(["--cache-dir", str(tmp_path / "elsewhere"), "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
