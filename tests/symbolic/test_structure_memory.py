"""Structures (SymPy expressions and derivatives) are not kept for every formula ever seen.

A long neuroevolution run meets ever new formulas. A Structure lives while a cached parse (the
bounded parse cache, shrunk here) or a layer uses it; the others are released, and a formula
met again is simply derived again.
"""
from __future__ import annotations

import functools
import gc

import pytest

from heterosymnn.symbolic import layer

FORMULAS = [f"a*sin(num/{k}) + num**{k % 5 + 2}" for k in range(2, 32)]


@pytest.fixture
def small_parse_cache(monkeypatch):
    monkeypatch.setattr(layer, "_parse_node", functools.lru_cache(maxsize=4)(layer._parse_node.__wrapped__))


def _remembered(keys) -> int:
    gc.collect()
    return sum(key in layer._structures for key in keys)


def test_structures_of_formulas_no_longer_used_are_released(small_parse_cache):
    keys = []
    for text in FORMULAS:
        keys.extend(layer.analyze([(text, {"a": 1.0})]).plan.structure_keys)
    assert len(set(keys)) == len(FORMULAS)
    assert _remembered(keys) <= 4  # those of the 4 cached parses


def test_a_live_layer_keeps_its_structures_and_a_released_one_is_derived_again(small_parse_cache):
    kept = layer.analyze([(FORMULAS[0], {"a": 1.0}), (FORMULAS[1], {"a": 2.0})])
    seen = {}
    for text in FORMULAS[2:]:
        analyzed = layer.analyze([(text, {"a": 1.0})])
        seen[text] = (analyzed.plan.structure_keys, str(analyzed.structures[0].derivative))
    assert _remembered(kept.plan.structure_keys) == 2  # in use by a layer: kept, and shared
    assert layer.analyze([(FORMULAS[0], {"a": 3.0})]).structures[0] is kept.structures[0]
    keys, derivative = seen[FORMULAS[2]]
    assert _remembered(keys) == 0
    again = layer.analyze([(FORMULAS[2], {"a": 1.0})])  # released meanwhile: derived again, the same
    assert (again.plan.structure_keys, str(again.structures[0].derivative)) == (keys, derivative)
