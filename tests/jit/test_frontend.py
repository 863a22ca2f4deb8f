"""The layer front end: a cached layer plan is reused only for the definitions it was made from."""
from __future__ import annotations

import dataclasses

import numpy as np

from heterosymnn import SymbolicJITCompiler
from heterosymnn.cache import KernelCache
from heterosymnn.config import settings
from heterosymnn.jit.frontend import LayerSource
from heterosymnn.symbolic import named_table


def _plan_keys(configs):
    cache = KernelCache(settings().cache_dir)
    source = LayerSource(configs, "activation", cache)
    return source._record_key(source._normalized()), source.plan


def test_plan_is_cached_and_reused_for_the_same_texts():
    key, plan = _plan_keys(["sigmoid", ("a*tanh(num)", {"a": 2.0})])
    again, cached = _plan_keys(["sigmoid", ("a*tanh(num)", {"a": 5.0})])
    assert again == key and cached.structure_keys == plan.structure_keys


def test_a_changed_named_formula_does_not_reuse_the_plan_made_for_the_old_one(monkeypatch):
    """An upgrade that redefines "sigmoid" must not run the old definition from a warm cache."""
    old_key, old_plan = _plan_keys(["sigmoid"])
    changed = dict(named_table.NAMED)
    changed["sigmoid"] = dataclasses.replace(changed["sigmoid"], text="1/(1 + exp(-num))")
    monkeypatch.setattr(named_table, "NAMED", changed)
    new_key, _ = _plan_keys(["sigmoid"])
    assert new_key != old_key


def test_named_sigmoid_from_a_warm_cache_is_still_the_stable_one():
    first = SymbolicJITCompiler(["sigmoid"], "CPU_PYTHON", dtype="float64")
    second = SymbolicJITCompiler(["sigmoid"], "CPU_PYTHON", dtype="float64")  # plan from the cache
    x = np.array([[-1000.0, 0.0, 1000.0]])
    for comp in (first, second):
        np.testing.assert_array_equal(comp.backward_kernel(x, np.ones_like(x)), [[0.0, 0.25, 0.0]])
