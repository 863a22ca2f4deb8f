"""Piecewise built without letting SymPy fold a Piecewise inside a condition.

A condition may compare something that contains a Piecewise: a user writes
``Piecewise((num, Abs(Piecewise(...)) < 1), (0, True))``, or a named formula's
stable form tests the sign of its argument and the argument is itself a named
formula (``softplus(softplus(num))``). Left to itself, SymPy folds such a
condition into an ``ITE`` through its set logic: seconds for three nested named
formulas, an internal KeyError for some constant conditions, and an ``ITE`` no
backend evaluates. Here the condition is split over the inner Piecewise's
branches instead::

    R(P),  P = Piecewise((e1, k1), (e2, k2), (e3, True))
    ->  (k1 & R(e1)) | (~k1 & k2 & R(e2)) | (~k1 & ~k2 & R(e3))

which is np.select's meaning of P: the first true condition wins, and a
condition on NaN is false, so NaN takes the last branch.

Every Piecewise the parser and the named formulas build goes through
:func:`piecewise` (directly or through :func:`substitute`), so no condition of a
built expression contains a Piecewise, and SymPy's later rebuilds (slotting,
differentiation) have nothing to fold.

:func:`piecewise` builds this module's :class:`Piecewise`, which merges neighbouring
branches of equal value itself, with a plain ``Or``, whenever it is built or
rebuilt. SymPy's Piecewise merges them too, but rewrites the merged condition
into conjunctive normal form, which is exponential in the size of a split
condition. Rebuilds make branches equal all the time: differentiation turns
every constant branch into 0, and slot numbering views ``a`` and ``b`` as one
constant. ``Piecewise((a, mish(num) > 1), (b, mish(num) < swish(num)), (num,
True))`` did not finish in hours.
"""
from __future__ import annotations

import math
from typing import Dict, List, Mapping, Sequence, Tuple

import sympy as sp


class ConditionProblem(Exception):
    """A condition that compares a Piecewise cannot be split; the message says why and the fix."""


#: Most combinations of branches one comparison is split into. Three nested named formulas
#: (mish(mish(mish(num)))) need 16; a comparison of many Piecewises would grow without bound
#: (each distinct Piecewise multiplies the terms by its number of branches).
MAX_SPLIT_TERMS = 64


class Piecewise(sp.Piecewise):
    """SymPy's ``Piecewise``, merging neighbouring branches of equal value without CNF.

    Every rebuild (``xreplace``, ``diff``, ``replace``) goes through ``eval``, so the
    merge happens before SymPy's own simplification sees two equal neighbours. It keeps
    SymPy's name so that printers, error messages and structure keys (``srepr``) see a
    plain Piecewise; ``isinstance(..., sp.Piecewise)`` holds.
    """

    @classmethod
    def eval(cls, *pairs):
        merged = merge_equal_neighbours(pairs)
        if len(merged) < len(pairs):
            return cls(*merged)
        return super().eval(*pairs)


def merge_equal_neighbours(pairs: Sequence[Tuple[sp.Expr, sp.Basic]]) -> List[Tuple[sp.Expr, sp.Basic]]:
    """``pairs`` with each run of equal values as one branch: the first true condition
    wins, so ``(v, c1), (v, c2)`` means ``(v, c1 | c2)``."""
    merged: List[Tuple[sp.Expr, sp.Basic]] = []
    for value, condition in pairs:
        if merged and merged[-1][0] == value:
            merged[-1] = (value, sp.Or(merged[-1][1], condition))
        else:
            merged.append((value, condition))
    return merged


def piecewise(pairs: Sequence[Tuple[sp.Expr, sp.Basic]]) -> sp.Expr:
    """``Piecewise(*pairs)`` with every Piecewise inside a condition split into its branches,
    built as this module's :class:`Piecewise`."""
    return Piecewise(*[(value, fold_condition(condition)) for value, condition in pairs])


def fold_condition(condition: sp.Basic) -> sp.Basic:
    """``condition`` with no Piecewise left inside it (see the module docstring)."""
    if not isinstance(condition, sp.Basic) or not condition.has(sp.Piecewise):
        return condition
    if isinstance(condition, (sp.And, sp.Or, sp.Not)):
        return condition.func(*[fold_condition(arg) for arg in condition.args])
    # distinct Piecewises, outermost first (one substitution replaces every copy of one)
    inners = list(dict.fromkeys(node for node in sp.preorder_traversal(condition) if isinstance(node, sp.Piecewise)))
    combinations = math.prod(len(node.args) for node in inners)
    if combinations > MAX_SPLIT_TERMS:
        raise ConditionProblem(
            f"a condition compares Piecewise expressions with {combinations} combinations of branches "
            f"(at most {MAX_SPLIT_TERMS} are supported); move the Piecewise (or the named formula that "
            f"contains one) out of the condition: {str(condition)[:120]}")
    inner = inners[0]
    if inner.args[-1].cond is not sp.true:
        raise ConditionProblem(
            f"a condition compares a Piecewise without a final (value, True) branch ({str(inner)[:120]}); "
            f"give it one (where no condition holds its value is NaN, and comparing NaN is "
            f"ambiguous), or move the Piecewise out of the condition")
    terms, earlier = [], []
    for pair in inner.args:
        guard = sp.And(pair.cond, *[sp.Not(previous) for previous in earlier])
        terms.append(sp.And(guard, fold_condition(condition.xreplace({inner: pair.expr}))))
        earlier.append(pair.cond)
    return sp.Or(*terms)


def substitute(expr: sp.Basic, mapping: Mapping[sp.Basic, sp.Basic]) -> sp.Basic:
    """``expr.xreplace(mapping)``, rebuilding every Piecewise through :func:`piecewise`."""
    done: Dict[sp.Basic, sp.Basic] = {}

    def walk(node: sp.Basic) -> sp.Basic:
        if node in mapping:
            return mapping[node]
        if not node.args:
            return node
        if node in done:
            return done[node]
        if isinstance(node, sp.Piecewise):
            result = piecewise([(walk(pair.expr), walk(pair.cond)) for pair in node.args])
        else:
            args = [walk(arg) for arg in node.args]
            result = node if all(a is b for a, b in zip(args, node.args)) else node.func(*args)
        done[node] = result
        return result

    return walk(expr)
