"""The host CPU's instruction-set level in every decision that depends on it.

A cache written on an x86-64-v3 machine and read on an older one (a shared home,
NFS, a copied cache) must never hand that machine AVX2 code: the persisted
toolchain record is detected again for the other level, and a module entry
built for a level the host cannot run is never loaded. The host level is faked
(the real compiler, cache and modules are used); building code for a level is
safe on any x86-64 machine, only running it is not.
"""
from __future__ import annotations

import importlib.machinery
import json

import numpy as np
import pytest

from heterosymnn import JITCompilationError, SymbolicJITCompiler
from heterosymnn.backends import cpu_modules
from heterosymnn.cache import KernelCache, default_cache
from heterosymnn.symbolic.layer import analyze
from heterosymnn.toolchains import clear_caches, find_toolchain, isa
from heterosymnn.toolchains.persisted import FILE_NAME, find_toolchain_persisted, fingerprint

REAL_LEVEL = isa.host_level()
LOWER = {"x86-64-v3": "x86-64-v2", "x86-64-v2": "x86-64"}
pytestmark = pytest.mark.skipif(REAL_LEVEL not in LOWER, reason="needs an x86-64-v2 or v3 host")

try:
    find_toolchain()
except Exception as exc:  # noqa: BLE001 - no compiler: nothing here can be tested
    pytestmark = pytest.mark.skip(reason=f"no C toolchain: {exc}")


@pytest.fixture
def host(monkeypatch):
    """``host(level)`` makes this process see a CPU of that level (detections redone)."""

    def pretend(level: str) -> None:
        monkeypatch.setattr(isa, "detect_level", lambda *args, **kwargs: level)
        clear_caches()

    yield pretend
    monkeypatch.undo()
    clear_caches()


def test_levels_are_ordered():
    assert isa.runs_on("x86-64", "x86-64-v3") and isa.runs_on("x86-64-v2", "x86-64-v3")
    assert not isa.runs_on("x86-64-v3", "x86-64-v2") and not isa.runs_on("x86-64-v2", "x86-64")
    assert isa.runs_on("generic", "x86-64") and isa.runs_on("generic", "armv8-a")
    assert isa.runs_on("armv8-a", "armv8-a") and not isa.runs_on("armv8-a", "x86-64-v3")
    assert not isa.runs_on("x86-64-v9", "x86-64-v3") and not isa.runs_on("", "x86-64")


def test_the_toolchain_record_is_detected_again_on_another_cpu_level(host):
    cache = default_cache()
    host(REAL_LEVEL)
    high = find_toolchain_persisted(cache)
    assert high.isa == REAL_LEVEL
    host(LOWER[REAL_LEVEL])
    low = find_toolchain_persisted(cache)
    assert low.isa == LOWER[REAL_LEVEL], "a record written for a higher level was reused"
    assert f"-march={REAL_LEVEL}" not in low.compile_args
    # Both answers are kept: two machines sharing the cache do not detect again each time.
    assert len(json.loads((cache.root / FILE_NAME).read_text())) == 2


def test_a_record_for_a_level_the_host_cannot_run_is_never_used(host):
    cache = default_cache()
    host(REAL_LEVEL)
    high = find_toolchain_persisted(cache)
    host(LOWER[REAL_LEVEL])
    # A record under this host's fingerprint that names a higher level (copied or edited file).
    record = json.loads((cache.root / FILE_NAME).read_text())
    record[fingerprint()] = dict(record[next(iter(record))], isa=high.isa)
    (cache.root / FILE_NAME).write_text(json.dumps(record))
    assert find_toolchain_persisted(cache).isa == LOWER[REAL_LEVEL]


def _module_keys(cache: KernelCache):
    return [e.key for e in (cache.lookup(p.name) for p in cache.root.glob("entries/*/*")) if e is not None
            and e.meta.get("kind") == "c-module"]


def test_a_module_built_for_a_higher_level_is_never_loaded(host, monkeypatch, fresh_cache_dir):
    host(REAL_LEVEL)
    z = np.linspace(-3, 3, 64, dtype=np.float32).reshape(2, 32)
    SymbolicJITCompiler(["tanh", "sin(num)*num"], "CPU_JIT", strict=True).forward_kernel(z)
    toolchain = find_toolchain_persisted(default_cache())
    [module_key] = _module_keys(KernelCache(fresh_cache_dir))

    host(LOWER[REAL_LEVEL])
    loaded = []
    monkeypatch.setattr(importlib.machinery.ExtensionFileLoader, "exec_module",
                        lambda self, module: loaded.append(self.path))
    # The same key as on the higher machine (a toolchain record that escaped the checks above):
    # a miss, and the entry stays for the machines it suits.
    fresh = KernelCache(fresh_cache_dir)
    assert cpu_modules.load_extension(fresh, module_key) is None
    assert loaded == [] and fresh.lookup(module_key) is not None
    layer = analyze(["tanh", "sin(num)*num"])
    with pytest.raises(JITCompilationError, match=f"built for {REAL_LEVEL}, which this CPU"):
        cpu_modules.ensure_structures(fresh, layer.plan.structure_keys, toolchain, "float32",
                                      lambda keys: layer.structures)
    assert loaded == []


def test_a_layer_on_a_lower_host_builds_its_own_modules(host, fresh_cache_dir):
    host(REAL_LEVEL)
    z = np.linspace(-3, 3, 64, dtype=np.float32).reshape(2, 32)
    SymbolicJITCompiler(["tanh", "sin(num)*num"], "CPU_JIT", strict=True).forward_kernel(z)
    host(LOWER[REAL_LEVEL])
    before = default_cache().stats().builds
    comp = SymbolicJITCompiler(["tanh", "sin(num)*num"], "CPU_JIT", strict=True)
    assert default_cache().stats().builds - before == 2  # the runtime driver and the row functions
    reference = SymbolicJITCompiler(["tanh", "sin(num)*num"], "CPU_PYTHON").forward_kernel(z)
    np.testing.assert_allclose(comp.forward_kernel(z), reference, rtol=1e-6)
    cache = KernelCache(fresh_cache_dir)
    assert {cache.lookup(key).meta["isa"] for key in _module_keys(cache)} == {REAL_LEVEL, LOWER[REAL_LEVEL]}

