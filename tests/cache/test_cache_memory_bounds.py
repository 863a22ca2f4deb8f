"""Bounded memory in long runs: what the cache remembers per process stops growing.

A neuroevolution process constructs thousands of distinct layers one after another; every one
publishes a layer plan, takes locks and looks entries up. The bounds are shrunk here so that a
few dozen keys exceed them, on a real cache on disk; forgetting must stay correct (a dropped
entry is read from disk again, a dropped signature hashed again, a dropped module reloaded).
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from heterosymnn import SymbolicJITCompiler, ToolchainNotFoundError
from heterosymnn.cache import KernelCache, default_cache, entry, locks, memory
from heterosymnn.toolchains import find_toolchain

from cache_helpers import file_builder, key_for

KEYS = 40  # distinct keys per test: several times every shrunken bound


@pytest.fixture
def small_bounds(monkeypatch):
    """Memory layers created from now on keep 8 entries and 2 objects."""
    # raising=False: the same test shows the unbounded growth of code that has no bounds.
    monkeypatch.setattr(memory, "MAX_ENTRIES", 8, raising=False)
    monkeypatch.setattr(memory, "MAX_OBJECTS", 2, raising=False)


def _sizes(cache: KernelCache) -> dict:
    layer = cache._memory
    return {name: len(getattr(layer, f"_{name}")) for name in ("entries", "objects", "touched")}


def test_the_memory_layer_keeps_a_bounded_number_of_entries_and_objects(cache_dir, small_bounds):
    cache = KernelCache(cache_dir)
    keys = [key_for(f"bounded-{i}") for i in range(KEYS)]
    for i, key in enumerate(keys):
        cache.build(key, file_builder(content=b"%d" % i))
        assert cache.lookup(key) is not None
        cache.remember(key, object())
    assert _sizes(cache) == {"entries": 8, "objects": 2, "touched": 8}
    # Forgetting is a miss in memory, not a loss: the entry is found on disk again.
    before = cache.stats()
    assert cache.lookup(keys[0]).path.is_dir()
    assert cache.stats().disk_hits == before.disk_hits + 1
    assert cache.lookup(keys[-1]) is not None  # recent: still a memory hit
    assert cache.stats().memory_hits == before.memory_hits + 1
    assert cache.recall(keys[0]) is None and cache.recall(keys[-1]) is not None


def test_verified_signatures_are_bounded_and_a_dropped_one_is_hashed_again(cache_dir, monkeypatch):
    monkeypatch.setattr(entry._verified, "limit", 16)
    hashed = []
    real_hash = entry.sha256_file
    monkeypatch.setattr(entry, "sha256_file", lambda path: hashed.append(path) or real_hash(path))
    writer = KernelCache(cache_dir)
    keys = [key_for(f"verified-{i}") for i in range(KEYS)]
    for i, key in enumerate(keys):
        writer.build(key, file_builder(content=b"%d" % i))
    assert len(entry._verified) <= 16
    reader = KernelCache(cache_dir)  # a second instance: nothing in its memory layer
    hashed.clear()
    assert reader.lookup(keys[-1]) is not None
    assert hashed == []  # its signature is still known: stats only
    assert reader.lookup(keys[0]) is not None
    assert [p.parent.name for p in hashed] == [keys[0]]  # dropped: hashed again, and good


def test_lock_objects_are_dropped_once_no_thread_holds_or_waits(tmp_path):
    paths = [tmp_path / "locks" / f"{i}.lock" for i in range(KEYS)]
    for path in paths:
        with locks.hold(path, 5.0):
            with locks.hold(path, 5.0):  # re-entrant: still one object
                assert locks._registry[str(path)].depth == 2
    with locks.hold_many(paths[:5], 5.0):
        assert all(str(p) in locks._registry for p in paths[:5])
    assert _ours(tmp_path) == []


def test_threads_still_exclude_each_other_while_lock_objects_come_and_go(tmp_path):
    paths = [tmp_path / "locks" / f"{i}.lock" for i in range(3)]
    inside = {str(p): 0 for p in paths}
    overlaps = []

    def work(seed: int) -> None:
        for i in range(150):
            path = paths[(seed + i) % len(paths)]
            with locks.hold(path, 30.0):
                inside[str(path)] += 1
                if inside[str(path)] != 1:
                    overlaps.append(str(path))
                inside[str(path)] -= 1

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert overlaps == []
    assert _ours(tmp_path) == []


def _ours(tmp_path: Path) -> list:
    return [name for name in list(locks._registry) if name.startswith(str(tmp_path))]


# -- the long run, shortened: many distinct CPU_JIT layers, one after another ------------------
POOL = [("a*sin(num) + b", "ab", lambda z, a, b: a * np.sin(z) + b),
        ("tanh(w*num)", "w", lambda z, w: np.tanh(w * z)),
        ("num**2/(1 + num**2)", "", lambda z: z ** 2 / (1 + z ** 2))]


def _layer(i: int):
    """Layer ``i``: a node sequence no other ``i`` gives (its base-3 digits), so a new layer plan."""
    picks = [int(digit) for digit in np.base_repr(i + 3, 3)]
    return [(POOL[p][0], {name: 0.5 + 0.1 * n for n, name in enumerate(POOL[p][1])}) for p in picks], picks


def test_many_distinct_layers_keep_the_process_memos_bounded_and_right(small_bounds):
    try:
        find_toolchain()
    except ToolchainNotFoundError as exc:
        pytest.skip(f"no usable C toolchain for CPU_JIT: {exc}")
    z = np.linspace(-2, 2, 5)
    for i in range(KEYS):
        configs, picks = _layer(i)
        comp = SymbolicJITCompiler(configs, "CPU_JIT", dtype="float64", strict=True)
        got = comp.forward_kernel(np.tile(z, (len(configs), 1)))
        for row, (p, (_, constants)) in enumerate(zip(picks, configs)):
            expected = POOL[p][2](z, *(constants[name] for name in POOL[p][1]))
            np.testing.assert_allclose(got[row], expected, rtol=1e-12, atol=1e-13)
        del comp
    cache = default_cache()
    sizes = _sizes(cache)
    assert sizes["entries"] <= 8 and sizes["touched"] <= 8 and sizes["objects"] <= 2, sizes
    assert _ours(cache.root) == []
