"""One distinct formula shape, with its constants replaced by parameter slots.

A :class:`Structure` is the unit that every backend compiles and caches:
``("a*sin(num)", {"a": 1})`` and ``("w*sin(num)", {"w": 7})`` are one structure
``p0*sin(num)`` whose slot ``p0`` is filled per node at run time.

Conventions every code generator relies on:

* variables are the real symbols of :data:`VARIABLES` for the mode
  (``num`` for activations; ``y_pred``, ``y_true`` for losses);
* slots are the real symbols ``p0, p1, ...`` (see :func:`slot_symbols`),
  numbered in a canonical order so renamed constants give the same key;
* the only node types are those listed in ``symbolic.grammar.EVALUABLE_NODES``.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Tuple

import sympy as sp

from .modes import ACTIVATION, LOSS, MODES, VARIABLE_NAMES

__all__ = ["ACTIVATION", "LOSS", "MODES", "VARIABLES", "Structure", "slot_symbols", "structure_key"]

VARIABLES = {mode: tuple(sp.Symbol(name, real=True) for name in names)
             for mode, names in VARIABLE_NAMES.items()}

#: bump when the meaning of a structure key changes (it feeds every cache key)
STRUCTURE_SCHEMA = 1


def slot_symbols(count: int) -> Tuple[sp.Symbol, ...]:
    """The parameter slot symbols ``p0 .. p{count-1}``."""
    return tuple(sp.Symbol(f"p{i}", real=True) for i in range(count))


def structure_key(mode: str, expr: sp.Expr) -> str:
    """SHA-256 of the canonical form of a slotted expression (never ``hash()``)."""
    text = f"heterosymnn-structure/{STRUCTURE_SCHEMA}/{mode}/{sp.srepr(expr)}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclasses.dataclass(frozen=True)
class Structure:
    """A formula shape and its derivative, ready for code generation."""

    key: str
    mode: str
    expr: sp.Expr
    """Forward: ``f(num; p)`` or ``L(y_pred, y_true; p)``."""
    derivative: sp.Expr
    """``df/dnum`` or ``dL/dy_pred``, kinks resolved (relu'(0) = 0)."""
    n_slots: int

    @property
    def variables(self) -> Tuple[sp.Symbol, ...]:
        return VARIABLES[self.mode]

    @property
    def slots(self) -> Tuple[sp.Symbol, ...]:
        return slot_symbols(self.n_slots)
