"""Symbolic derivatives with PyTorch's conventions at kinks.

SymPy differentiates ``Max``/``Min`` into ``Heaviside(u)`` with H(0) = 1/2,
``sign`` and ``Heaviside`` into ``DiracDelta``. Backpropagation wants what
PyTorch does: ``relu'(0) = 0``, ``Abs'(0) = sign(0) = 0``, a step's derivative 0.
So a user's own ``Heaviside`` is hidden behind a placeholder with a zero
derivative while differentiating, every ``Heaviside`` that differentiation
created gets H(0) = 0, and every ``DiracDelta`` becomes 0.

``Abs`` and ``sign`` are hidden too. SymPy differentiates them by their real
definition only when it can prove the argument real; ``Abs(a**num)``,
``Abs(log(num))`` or ``sign(sqrt(num))`` give ``re``/``im``/``atan2`` or an
unevaluated ``Derivative``, which no backend evaluates (and which is NaN, not
0, at the kink). Every value here is real or NaN, so ``Abs' = sign`` and
``sign' = 0`` always hold.

``Max`` and ``Min`` are hidden as well, for time: SymPy's derivative rebuilds a
``Max`` of the other n - 1 arguments for each argument, and every rebuild
compares all pairs symbolically, so ``Max`` of 16 arguments took seconds and of
50 over a minute. The hidden forms give the same ``Heaviside`` terms with the
rest kept unevaluated (their arguments are already distinct: the parser's
``Max`` removed duplicates and dominated ones).

The cheap rewrites that follow are skipped on large derivatives: ``powsimp`` took
11 s on the derivative of a 25-deep continued fraction and never shortens one.
"""
from __future__ import annotations

import sympy as sp

from . import grammar


class _UserStep(sp.Function):
    """A user-written Heaviside, kept apart from those produced by differentiation."""

    is_real = True

    def fdiff(self, argindex=1):
        return sp.S.Zero


class _RealAbs(sp.Function):
    """``Abs`` of an argument that is real wherever it is defined."""

    is_real = True

    def fdiff(self, argindex=1):
        return sp.sign(self.args[0])


class _RealSign(sp.Function):
    """``sign`` of an argument that is real wherever it is defined: a step, derivative 0."""

    is_real = True

    def fdiff(self, argindex=1):
        return sp.S.Zero


def _unevaluated(kind, args):
    return args[0] if len(args) == 1 else kind(*args, evaluate=False)


class _HiddenMax(sp.Function):
    """``Max`` whose derivative does not re-simplify the other arguments."""

    is_real = True

    def fdiff(self, argindex=1):
        others = self.args[:argindex - 1] + self.args[argindex:]
        return sp.Heaviside(self.args[argindex - 1] - _unevaluated(sp.Max, others))


class _HiddenMin(sp.Function):
    """``Min`` whose derivative does not re-simplify the other arguments."""

    is_real = True

    def fdiff(self, argindex=1):
        others = self.args[:argindex - 1] + self.args[argindex:]
        return sp.Heaviside(_unevaluated(sp.Min, others) - self.args[argindex - 1])


#: What each node becomes while differentiating (see the module docstring).
_HIDDEN = {
    sp.Heaviside: _UserStep, sp.Abs: _RealAbs, sp.sign: _RealSign, sp.Max: _HiddenMax, sp.Min: _HiddenMin,
}
#: And back, with the kink conventions: a Heaviside that differentiation created is 0 at 0,
#: a DiracDelta is 0, the user's own Heaviside keeps its value at 0.
_RESTORED = {
    _RealAbs: sp.Abs, _RealSign: sp.sign,
    _HiddenMax: lambda *args: _unevaluated(sp.Max, args), _HiddenMin: lambda *args: _unevaluated(sp.Min, args),
    sp.DiracDelta: lambda *args: sp.S.Zero,
    sp.Heaviside: lambda arg, *rest: sp.Heaviside(arg, 0),
    _UserStep: sp.Heaviside,
}


def _rebuilt(expr: sp.Basic, constructors) -> sp.Basic:
    """``expr`` with every node whose type is in ``constructors`` rebuilt by it, in one pass.

    Not ``replace``, one type at a time: that rebuilds a ``Min`` around an already hidden
    ``Max`` of constants, which SymPy rejects as not comparable (``Min(num, Max(e, pi))``).
    Here a parent is built from its converted children only when it is converted itself,
    and a ``Max``/``Min`` that stays (inside a derivative's Heaviside) is not re-evaluated.
    """
    done = {}

    def walk(node: sp.Basic) -> sp.Basic:
        if not node.args:
            return node
        if node in done:
            return done[node]
        args = tuple(walk(arg) for arg in node.args)
        make = constructors.get(type(node))
        if make is not None:
            result = make(*args)
        elif all(new is old for new, old in zip(args, node.args)):
            result = node
        elif isinstance(node, (sp.Max, sp.Min)):
            result = node.func(*args, evaluate=False)
        else:
            result = node.func(*args)
        done[node] = result
        return result

    return walk(expr)


class DerivativeProblem(Exception):
    """The derivative contains something a backend cannot evaluate."""


def differentiate(expr: sp.Expr, variable: sp.Symbol) -> sp.Expr:
    """``d expr / d variable`` with kink conventions applied, simplified cheaply.

    Raises
    ------
    DerivativeProblem
        When the result contains a node no backend can evaluate.
    """
    derivative = sp.diff(_rebuilt(expr, _HIDDEN), variable)
    derivative = _rebuilt(derivative, _RESTORED)
    derivative = _cheapest(derivative)
    bad = grammar.unsupported_nodes(derivative)
    if bad:
        raise DerivativeProblem(
            f"its derivative contains {bad[0]}, which cannot be evaluated; "
            f"rewrite the formula (e.g. avoid functions of constants that are undefined)")
    return derivative


#: Above this many operations a derivative is not rewritten by ``powsimp``, which grows
#: super-linearly with size (named formulas' derivatives have at most ~45 operations).
POWSIMP_MAX_OPS = 200


def _cheapest(expr: sp.Expr) -> sp.Expr:
    """Pick the cheapest of a few fast rewrites (full ``simplify`` can take seconds)."""
    candidates = [expr]
    rewrites = (sp.factor_terms, sp.powsimp) if sp.count_ops(expr) <= POWSIMP_MAX_OPS else (sp.factor_terms,)
    for rewrite in rewrites:
        try:
            candidates.append(rewrite(expr))
        except Exception:  # a rewrite failing only removes a candidate
            continue
    return min(candidates, key=sp.count_ops)
