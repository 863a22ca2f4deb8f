"""Pieces shared by every printer of the family (C and CUDA): dtypes, the
error type, what printed code needs around it, float literal formatting and the
printing of conditions / Piecewise, whose semantics do not depend on the target.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Set

import numpy as np
import sympy as sp

from heterosymnn.codegen.dtypes import DTYPES, check_dtype  # noqa: F401  (re-exported)


class UnsupportedExpressionError(ValueError):
    """An expression contains a node the C printers cannot evaluate."""


@dataclasses.dataclass
class PrintedUsage:
    """What printed expressions need around them; shared by the printers of one source.

    Attributes
    ----------
    math : set of str
        Math functions called directly (``"expf"``).
    aliases : dict of str to str
        Names printed instead of a math function, and the function each stands for
        (``"hs_sin_f32"`` -> ``"sinf"``).
    helpers : set of str
        Helper kinds called (``"max"``, ``"sign"``, ...).
    """

    math: Set[str] = dataclasses.field(default_factory=set)
    aliases: Dict[str, str] = dataclasses.field(default_factory=dict)
    helpers: Set[str] = dataclasses.field(default_factory=set)


def format_literal(value: float, dtype: str, *, suffix: str, inf: str, nan: str) -> str:
    """C literal of ``value`` rounded to ``dtype``, with full precision.

    17 significant digits round-trip any double and 9 any float, so the
    compiler reproduces exactly the value NumPy uses. Rounding goes through
    the double first, like NumPy's own conversion of a Python float constant.
    A value beyond the dtype's range becomes the ``inf`` spelling.
    """
    digits = 17
    if dtype == "float32":
        with np.errstate(over="ignore"):
            value = float(np.float32(value))
        digits = 9
    if value != value:
        return nan
    if value in (float("inf"), float("-inf")):
        return inf if value > 0 else f"(-{inf})"
    text = "%.*g" % (digits, value)
    if not any(ch in text for ch in ".e"):
        text += ".0"  # "2f" is not a float literal, "2.0f" is
    return text + suffix


class LogicPrinting:
    """Conditions and Piecewise, shared by every printer of the family.

    Comparisons with NaN are false in C as in NumPy, so ``np.select``
    semantics come from nested ternaries with a NaN default.
    """

    def _print_Relational(self, expr) -> str:
        return f"({self._print(expr.lhs)} {expr.rel_op} {self._print(expr.rhs)})"

    # Bitwise & and | on 0/1 comparison results instead of && and ||: no
    # short-circuit control flow for the vectoriser to if-convert.
    def _print_And(self, expr: sp.And) -> str:
        return "(" + " & ".join(self._print(a) for a in expr.args) + ")"

    def _print_Or(self, expr: sp.Or) -> str:
        return "(" + " | ".join(self._print(a) for a in expr.args) + ")"

    def _print_Not(self, expr: sp.Not) -> str:
        return f"(!{self._print(expr.args[0])})"

    def _print_BooleanTrue(self, expr: sp.Basic) -> str:
        return "1"  # an int, so no <stdbool.h> is needed

    def _print_BooleanFalse(self, expr: sp.Basic) -> str:
        return "0"

    def _print_Piecewise(self, expr: sp.Piecewise) -> str:
        # First true condition wins; NaN when none is (no True branch).
        text = self._nan()
        for branch, cond in reversed(expr.args):
            if cond == sp.true:
                text = self._print(branch)
            elif cond != sp.false:
                text = f"({self._print(cond)} ? {self._print(branch)} : {text})"
        return text
