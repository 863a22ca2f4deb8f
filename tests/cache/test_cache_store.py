"""KernelCache in one process: build counts, layers, damaged entries, API edges."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import threading
import time
import warnings

import pytest

import heterosymnn.cache as hcache
from heterosymnn.cache import Entry, KernelCache
from heterosymnn.config import override
from heterosymnn.errors import CacheError, CompilationWarning

from cache_helpers import file_builder, key_for, read_log


@contextlib.contextmanager
def no_warnings():
    """Context in which any warning fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def test_same_key_twice_builds_once(cache):
    calls = []
    key = key_for("a")
    first = cache.build(key, file_builder(calls=calls))
    second = cache.build(key, file_builder(calls=calls))
    assert len(calls) == 1
    assert second == first
    assert cache.stats() == hcache.CacheStats(builds=1, functions_built=2, disk_hits=0, memory_hits=1)


def test_memory_hit_then_disk_hit_in_a_new_instance(cache, cache_dir):
    key = key_for("a")
    cache.build(key, file_builder())
    assert cache.lookup(key) is not None
    assert cache.stats().memory_hits == 1 and cache.stats().disk_hits == 0

    other = KernelCache(cache_dir)  # as a new process would see it
    entry = other.lookup(key)
    assert entry is not None and entry.file("kernel.so").read_bytes() == b"artifact" * 64
    assert other.lookup(key) == entry
    assert other.stats() == hcache.CacheStats(builds=0, functions_built=0, disk_hits=1, memory_hits=1)


def test_missing_key_is_a_silent_miss(cache):
    with no_warnings():
        assert cache.lookup(key_for("never built")) is None
    assert cache.stats() == hcache.CacheStats()


def test_layout_meta_and_build_log(cache, cache_dir):
    key = key_for("a")
    entry = cache.build(key, file_builder(content=b"xyz"))
    assert cache.root == cache_dir / f"v{hcache.CACHE_SCHEMA}"
    assert entry.path == cache.root / "entries" / key[:2] / key
    meta = json.loads((entry.path / "meta.json").read_text())
    assert meta["key"] == key
    assert meta["files"] == {"kernel.so": hashlib.sha256(b"xyz").hexdigest()}
    assert meta["sizes"] == {"kernel.so": 3}
    assert abs(meta["created"] - time.time()) < 60
    assert meta["toolchain"] == "fake-cc 1.0" and meta["functions"] == 2  # the builder's metadata
    assert entry.meta == meta
    with pytest.raises(KeyError, match="kernel.so"):
        entry.file("other.so")
    (record,) = read_log(cache)
    assert record["key"] == key and record["pid"] == os.getpid()
    assert record["functions"] == 2 and record["toolchain"] == "fake-cc 1.0" and record["seconds"] >= 0
    assert os.listdir(cache.root / "tmp") == []  # the build directory became the entry


def test_nested_files_and_function_lists(cache):
    def builder(build_dir):
        (build_dir / "lib").mkdir()
        (build_dir / "lib" / "k.so").write_bytes(b"so")
        (build_dir / "k.c").write_text("int x;")
        return {"functions": ["f0", "f1", "f2"]}

    entry = cache.build(key_for("nested"), builder)
    assert set(entry.files) == {"lib/k.so", "k.c"}
    assert entry.file("lib/k.so").read_bytes() == b"so"
    assert cache.stats().functions_built == 3


def _damage_truncate(entry):
    path = entry.file("kernel.so")
    path.write_bytes(path.read_bytes()[:10])


def _damage_flip_a_byte(entry):
    path = entry.file("kernel.so")
    data = bytearray(path.read_bytes())
    data[5] ^= 0xFF
    path.write_bytes(bytes(data))


def _damage_remove_meta(entry):
    (entry.path / "meta.json").unlink()


def _damage_garble_meta(entry):
    (entry.path / "meta.json").write_text('{"key": "tr')


def _damage_remove_artifact(entry):
    entry.file("kernel.so").unlink()


@pytest.mark.parametrize("damage, reason", [
    (_damage_truncate, "truncated"),
    (_damage_flip_a_byte, "SHA-256"),
    (_damage_remove_meta, "meta.json is missing"),
    (_damage_garble_meta, "corrupt"),
    (_damage_remove_artifact, "missing"),
])
def test_damaged_entry_warns_and_is_rebuilt(cache, cache_dir, damage, reason):
    key = key_for("a")
    damage(cache.build(key, file_builder()))

    fresh = KernelCache(cache_dir)  # as another process: nothing in memory
    with pytest.warns(CompilationWarning, match=reason) as record:
        assert fresh.lookup(key) is None
    assert "rebuilt" in str(record[0].message) and str(key) in str(record[0].message)

    calls = []
    entry = fresh.build(key, file_builder(calls=calls))
    assert len(calls) == 1 and fresh.stats().builds == 1
    assert entry.file("kernel.so").read_bytes() == b"artifact" * 64
    assert os.listdir(fresh.root / "trash") == []  # the broken one was moved aside and deleted
    assert KernelCache(cache_dir).lookup(key) == entry


def test_a_repaired_entry_is_never_removed_by_a_late_reader(cache, cache_dir):
    # A sees a broken entry; B rebuilds it meanwhile; A's build must then reuse
    # B's fresh entry, not remove it as "the broken one".
    key = key_for("a")
    _damage_truncate(cache.build(key, file_builder()))
    a, b = KernelCache(cache_dir), KernelCache(cache_dir)
    with pytest.warns(CompilationWarning):
        assert a.lookup(key) is None
    assert (a.root / "entries" / key[:2] / key).is_dir()  # an unlocked lookup removes nothing
    with pytest.warns(CompilationWarning):
        rebuilt = b.build(key, file_builder())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reused = a.build(key, file_builder())
    assert a.stats().builds == 0 and b.stats().builds == 1
    assert reused.meta["created"] == rebuilt.meta["created"] and reused.file("kernel.so").exists()


def test_entry_of_another_key_is_not_used(cache, cache_dir):
    a, b = key_for("a"), key_for("b")
    cache.build(a, file_builder(content=b"A"))
    target = cache.root / "entries" / b[:2] / b
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(cache.root / "entries" / a[:2] / a, target)
    with pytest.warns(CompilationWarning, match="another entry"):
        assert KernelCache(cache_dir).lookup(b) is None


def test_entry_removed_by_another_process_is_a_plain_miss(cache, cache_dir):
    key = key_for("a")
    cache.build(key, file_builder())
    assert hcache.clear(cache_dir)["removed"] == 1
    with no_warnings():
        assert cache.lookup(key) is None  # memory layer notices the entry is gone
    assert cache.build(key, file_builder()).file("kernel.so").exists()
    assert cache.stats().builds == 2


def test_failing_builder_leaves_nothing_behind(cache):
    key = key_for("a")

    def broken(build_dir):
        (build_dir / "half.so").write_bytes(b"half")
        raise RuntimeError("compiler exploded")

    with pytest.raises(RuntimeError, match="compiler exploded"):
        cache.build(key, broken)
    assert os.listdir(cache.root / "tmp") == []
    assert cache.lookup(key) is None and cache.stats().builds == 0 and read_log(cache) == []
    cache.build(key, file_builder())
    assert cache.stats().builds == 1


@pytest.mark.parametrize("builder, error", [
    (lambda d: {"files": {}}, ValueError),
    (lambda d: (d / "meta.json").write_text("{}") and {}, ValueError),
    (lambda d: {"toolchain": object()}, TypeError),
])
def test_bad_builder_output_is_rejected_and_cleaned(cache, builder, error):
    with pytest.raises(error):
        cache.build(key_for("a"), builder)
    assert os.listdir(cache.root / "tmp") == []
    assert cache.lookup(key_for("a")) is None


@pytest.mark.parametrize("bad", ["", "../../etc", "ABCDEF0123456789", "a" * 8])
def test_malformed_keys_are_rejected(cache, bad):
    with pytest.raises(ValueError, match="cache key"):
        cache.lookup(bad)


def test_threads_of_one_process_build_once(cache):
    calls = []

    def slow(build_dir):
        calls.append(build_dir)
        time.sleep(0.2)
        (build_dir / "k.so").write_bytes(b"k")
        return {}

    key = key_for("threads")
    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.build(key, slow))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len(results) == 8 and len(set(results)) == 1


def test_locked_is_reentrant_and_excludes_other_threads(cache, cache_dir):
    keys = [key_for("x"), key_for("y")]
    errors = []

    def contender():
        try:
            with KernelCache(cache_dir).locked([keys[1]]):
                errors.append("acquired a lock another thread holds")
        except CacheError as exc:
            errors.append(str(exc))

    with override(lock_timeout=0.2):
        with cache.locked(keys):
            # one compiler run producing both keys: publish() re-enters the held locks
            entries = [cache.publish(k, {}, {"functions": 1}) for k in keys]
            thread = threading.Thread(target=contender)
            thread.start()
            thread.join()
    assert [e.key for e in entries] == keys
    assert cache.stats().builds == 2 and cache.stats().functions_built == 2
    assert len(errors) == 1 and keys[1] in errors[0] and "HETEROSYMNN_LOCK_TIMEOUT" in errors[0]


def test_publish_copies_files(cache, tmp_path):
    src = tmp_path / "out.so"
    src.write_bytes(b"compiled")
    entry = cache.publish(key_for("p"), {"mod/out.so": src}, {"functions": 4})
    assert entry.file("mod/out.so").read_bytes() == b"compiled"
    assert src.exists() and cache.stats().functions_built == 4


def test_remember_and_recall(cache):
    key = key_for("m")
    assert cache.recall(key) is None
    module = object()
    cache.remember(key, module)
    assert cache.recall(key) is module
    assert cache.stats().memory_hits == 1


def test_invalidate_removes_only_the_entry_that_failed(cache, cache_dir):
    key = key_for("a")
    first = cache.build(key, file_builder())
    with pytest.warns(CompilationWarning, match="bad ELF header"):
        cache.invalidate(first, "bad ELF header")
    assert KernelCache(cache_dir).lookup(key) is None
    second = cache.build(key, file_builder())
    assert cache.stats().builds == 2

    # A stale Entry from before the rebuild must not take the new entry down.
    with pytest.warns(CompilationWarning):
        cache.invalidate(first, "stale handle")
    survivor = KernelCache(cache_dir).lookup(key)
    assert survivor is not None and survivor.meta["created"] == second.meta["created"]


def test_default_cache_follows_override_and_module_stats(tmp_path):
    with override(cache_dir=str(tmp_path / "one")):
        one = hcache.default_cache()
        assert hcache.default_cache() is one
        hcache.reset_stats()
        one.build(key_for("a"), file_builder())
        assert hcache.stats().builds == 1
        with override(cache_dir=str(tmp_path / "two")):
            two = hcache.default_cache()
            assert two is not one and two.root == tmp_path / "two" / f"v{hcache.CACHE_SCHEMA}"
            assert hcache.stats().builds == 0
        hcache.reset_stats()
        assert hcache.stats() == hcache.CacheStats()


def test_entry_is_a_frozen_value(cache):
    entry = cache.build(key_for("a"), file_builder())
    assert isinstance(entry, Entry)
    with pytest.raises(Exception):
        entry.key = "x"
