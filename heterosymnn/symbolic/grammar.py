"""The formula language: which names are functions, and which SymPy nodes may
reach a code generator.

The parser accepts only calls to :data:`FUNCTIONS` (derived from the function
table in :mod:`.functions`) and named formulas; after derivation every
expression is checked against :data:`EVALUABLE_NODES`, so a backend never meets
a node it cannot print.
"""
from __future__ import annotations

from typing import Callable, Dict, Tuple

import sympy as sp
import mpmath
from sympy.codegen import cfunctions

from .functions import MATH_FUNCTIONS, formula_names


class expm1(cfunctions.expm1):  # noqa: N801 - printers dispatch on the SymPy name
    """``exp(x) - 1``, folding a float argument with mpmath (SymPy's exp(x) - 1 cancels)."""

    @classmethod
    def eval(cls, arg):
        if arg.is_Float:
            return sp.Float(mpmath.expm1(arg._to_mpmath(arg._prec)), precision=arg._prec)
        return super().eval(arg)


class log1p(cfunctions.log1p):  # noqa: N801 - printers dispatch on the SymPy name
    """``log(1 + x)``, folding a float argument with mpmath.

    SymPy's own log1p turns a float argument into an exact fraction first, which for
    exp(-1e165) (a named softplus of a huge constant) never finishes.
    """

    @classmethod
    def eval(cls, arg):
        if arg.is_Float:
            if arg > -1:
                return sp.Float(mpmath.log1p(arg._to_mpmath(arg._prec)), precision=arg._prec)
            return sp.log(1 + arg)  # complex or -oo: the parser reports it
        return super().eval(arg)


#: Our own classes, where SymPy's version of a table row misbehaves.
_OURS = {"expm1": expm1, "log1p": log1p}


def sympy_constructor(name: str) -> Callable:
    """The SymPy class (or constructor, for ``sqrt``) a row of the function table names."""
    return _OURS.get(name) or getattr(sp, name)


# name in formula text -> (SymPy constructor, allowed argument counts; None = 2 or more)
FUNCTIONS: Dict[str, Tuple[Callable, Tuple[int, ...] | None]] = {
    name: (sympy_constructor(node), arity) for name, (node, arity) in formula_names().items()
}
# Piecewise is parsed specially: Piecewise((expr, cond), ..., (expr, True))
PIECEWISE = "Piecewise"

# Built-in constants, usable in any formula unless a node's constants dict
# gives a value for the same name (the dict wins).
BUILTIN_CONSTANTS: Dict[str, sp.Expr] = {
    "pi": sp.pi,
    "e": sp.E,
    "E": sp.E,
    "tau": 2 * sp.pi,
    "phi": sp.GoldenRatio,
}

# Function nodes of the table (sqrt is not one: it builds a Pow).
FUNCTION_NODES = tuple(node for node in (sympy_constructor(f.sympy) for f in MATH_FUNCTIONS)
                       if isinstance(node, type))

RELATIONALS = (
    sp.StrictLessThan, sp.LessThan, sp.StrictGreaterThan, sp.GreaterThan,
    sp.Equality, sp.Unequality,
)
BOOLEANS = (sp.And, sp.Or, sp.Not, sp.logic.boolalg.BooleanTrue, sp.logic.boolalg.BooleanFalse)

# Every node type a finished (forward or derivative) expression may contain.
EVALUABLE_NODES = (
    sp.Symbol, sp.Integer, sp.Rational, sp.Float,
    sp.core.numbers.Pi, sp.core.numbers.Exp1, sp.core.numbers.GoldenRatio,
    sp.Add, sp.Mul, sp.Piecewise, sp.functions.elementary.piecewise.ExprCondPair,
    *FUNCTION_NODES, *RELATIONALS, *BOOLEANS,
)


def unsupported_nodes(expr: sp.Basic) -> list[sp.Basic]:
    """Sub-expressions whose type no backend can evaluate (empty when all is fine)."""
    bad = []
    for node in sp.preorder_traversal(expr):
        if isinstance(node, (sp.Rational, sp.Float)):
            if not node.is_finite:
                bad.append(node)
            continue
        if isinstance(node, (sp.core.numbers.Infinity, sp.core.numbers.NegativeInfinity,
                             sp.core.numbers.ComplexInfinity, sp.core.numbers.NaN)):
            bad.append(node)
            continue
        if not isinstance(node, EVALUABLE_NODES):
            bad.append(node)
        elif isinstance(node, sp.Expr) and node.is_number and not isinstance(node.evalf(17), sp.Number):
            # a constant SymPy made complex after the parser checked it: (-1)**(1/3) from
            # Piecewise((-1, c))**(1/3), whose power SymPy moves into the branches. Evaluated,
            # as the parser checks constants: SymPy cannot tell that (-1)**pi is not real.
            bad.append(node)
    return bad
