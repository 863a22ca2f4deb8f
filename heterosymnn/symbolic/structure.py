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
import functools
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

    @functools.cached_property
    def constant_derivatives(self) -> Tuple[sp.Expr, ...]:
        """``df/dp_k`` (or ``dL/dp_k``) for every slot, in slot order.

        Derived on first use (a layer that never asks for constants' gradients never
        pays for them), with the kink conventions of :attr:`derivative`: a constant
        inside ``Max``/``Abs`` follows PyTorch, one in a Piecewise condition has
        derivative 0 (the condition is a step).

        Raises
        ------
        FormulaParsingError
            If a derivative contains something no backend can evaluate.
        """
        from ..errors import FormulaParsingError
        from .derivative import DerivativeProblem, differentiate

        try:
            return tuple(differentiate(self.expr, slot) for slot in self.slots)
        except DerivativeProblem as exc:
            raise FormulaParsingError(f"the derivative of {self.expr} with respect to one of its "
                                      f"constants: {exc}") from None

    @property
    def slots(self) -> Tuple[sp.Symbol, ...]:
        return slot_symbols(self.n_slots)
