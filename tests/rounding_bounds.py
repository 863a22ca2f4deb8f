"""An independent NumPy evaluation of a slotted expression, with a bound on how far any
correct floating-point evaluation of it may land from the exact value.

Two correct backends do not give bit-identical results: the C kernels call libm (or
glibc's libmvec) where NumPy calls its own SIMD routines, CSE and printing change the
order of operations (``x**3`` is ``x*x*x`` in C and ``pow`` in NumPy), and a
cancellation or a steep function turns those few-ulp differences into large ones.
A fixed tolerance is either too tight for ``1e30*x - 1e30*x`` or too loose for
``sin(x)``. So the reference carries a first-order *running error bound*: every
operation adds its own rounding (``ARITHMETIC_ULPS`` or ``MATH_ULPS`` units of the
dtype's epsilon, plus the smallest subnormal for gradual underflow) and propagates its
inputs' bounds through its slope, taken as the largest ``|f'|`` at the input and at
both ends of the input's error interval. Two correct results then differ by at most
twice the bound.

Some outcomes cannot be decided at all, and those points are *undecided*: neither
their NaN/inf pattern nor their value is compared. A point is undecided when, within
the input errors,

* a comparison, a ``sign`` or a ``Heaviside`` may go either way (a Piecewise or a step
  may switch);
* a function's argument may cross its domain edge (``sqrt``, ``log``, ``acosh``,
  ``asin``, ``atanh``, a power of a negative base), its overflow threshold, or a pole;
* a product may overflow or not, or multiply an infinity by what may be zero;
* a division is by a zero whose sign depends on the order of operations;

and anything computed from an undecided value is undecided too. A bound that is
infinite or NaN (the first-order estimate no longer means anything) leaves the value
uncompared, while the NaN/inf pattern is still compared unless undecided.

Leaves (inputs, constants and literals) are rounded to the dtype the same way by every
backend, so they are exact.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Dict, List, Mapping, Tuple

import numpy as np
import sympy as sp
from scipy import special

#: Rounding of one arithmetic operation, in units of epsilon (= 2 ulp).
ARITHMETIC_ULPS = 1.0
#: Rounding of one math-library call: glibc libm, libmvec (<= 4 ulp documented) and
#: NumPy's SIMD routines (<= 4 ulp) -- in units of epsilon, i.e. 8 ulp.
MATH_ULPS = 4.0


@dataclasses.dataclass
class Value:
    """One node evaluated over all points."""

    v: np.ndarray          # the value, in the dtype (stored as float64)
    e: np.ndarray          # absolute error bound (inf: no meaningful bound)
    u: np.ndarray          # undecided: the NaN/inf outcome may differ between correct evaluations
    leaf: bool = False     # an input, a constant or a literal (its signed zero is exact)


@dataclasses.dataclass
class Evaluation:
    value: np.ndarray
    bound: np.ndarray
    undecided: np.ndarray
    branches: List[np.ndarray]
    """Per non-smooth node, which branch each point took (Piecewise, Max/Min, Abs, sign ...)."""


def outcome(values: np.ndarray) -> np.ndarray:
    """0 finite, 1 +inf, 2 -inf, 3 NaN."""
    values = np.asarray(values, np.float64)
    return np.select([np.isnan(values), values == np.inf, values == -np.inf], [3, 1, 2], 0)


_UNARY: Dict[str, Tuple[Callable, Callable]] = {
    # name -> (function, derivative)
    "exp": (np.exp, np.exp),
    "expm1": (np.expm1, np.exp),
    "log1p": (np.log1p, lambda u: 1 / (1 + u)),
    "log": (np.log, lambda u: 1 / u),
    "sin": (np.sin, np.cos),
    "cos": (np.cos, lambda u: -np.sin(u)),
    "tan": (np.tan, lambda u: 1 + np.tan(u) ** 2),
    "asin": (np.arcsin, lambda u: 1 / np.sqrt(1 - u * u)),
    "acos": (np.arccos, lambda u: -1 / np.sqrt(1 - u * u)),
    "atan": (np.arctan, lambda u: 1 / (1 + u * u)),
    "sinh": (np.sinh, np.cosh),
    "cosh": (np.cosh, np.sinh),
    "tanh": (np.tanh, lambda u: 1 / np.cosh(u) ** 2),
    "asinh": (np.arcsinh, lambda u: 1 / np.sqrt(1 + u * u)),
    "acosh": (np.arccosh, lambda u: 1 / np.sqrt(u * u - 1)),
    "atanh": (np.arctanh, lambda u: 1 / (1 - u * u)),
    "erf": (special.erf, lambda u: 2 / np.sqrt(np.pi) * np.exp(-u * u)),
    "erfc": (special.erfc, lambda u: -2 / np.sqrt(np.pi) * np.exp(-u * u)),
}
_RELATIONS = {
    sp.StrictLessThan: np.less, sp.LessThan: np.less_equal, sp.StrictGreaterThan: np.greater,
    sp.GreaterThan: np.greater_equal, sp.Equality: np.equal, sp.Unequality: np.not_equal,
}


class Evaluator:
    """Evaluates SymPy expressions over arrays in one dtype, with error bounds."""

    def __init__(self, env: Mapping[sp.Symbol, np.ndarray], dtype: str, shape: Tuple[int, ...]):
        self.dtype = np.dtype(dtype)
        self.shape = shape
        self.eps = float(np.finfo(self.dtype).eps)
        self.tiny = float(np.finfo(self.dtype).smallest_subnormal)
        self.log2_max = float(np.log2(np.finfo(self.dtype).max))
        self.log2_normal = float(np.log2(np.finfo(self.dtype).smallest_normal))
        self.env = {s: np.broadcast_to(np.asarray(v, self.dtype), shape) for s, v in env.items()}
        self.branches: List[np.ndarray] = []
        self._memo: Dict[sp.Basic, object] = {}

    # -- helpers ------------------------------------------------------------------------------
    def _round(self, values) -> np.ndarray:
        with np.errstate(all="ignore"):
            return np.broadcast_to(np.asarray(values, np.float64).astype(self.dtype), self.shape).astype(np.float64)

    def _zeros(self) -> np.ndarray:
        return np.zeros(self.shape)

    def _finish(self, v, e, u) -> Value:
        e = np.where(np.isfinite(v), np.where(np.isnan(e), np.inf, e), 0.0)
        return Value(np.asarray(v, np.float64), e, np.asarray(u, bool))

    def _overflow_edge(self, log2_magnitude, relative) -> np.ndarray:
        """The exact result's magnitude (given as log2) may lie on either side of the dtype's max."""
        with np.errstate(all="ignore"):
            margin = np.log2(1 + np.minimum(relative, 1e300)) + 4 * self.eps
            return np.abs(log2_magnitude - self.log2_max) <= margin

    # -- entry points ---------------------------------------------------------------------------
    def evaluate(self, expr: sp.Basic) -> Evaluation:
        result = self._eval(expr)
        return Evaluation(result.v, result.e, result.u, self.branches)

    def _eval(self, expr):
        if expr in self._memo:
            return self._memo[expr]
        with np.errstate(all="ignore"):
            result = self._dispatch(expr)
        self._memo[expr] = result
        return result

    def _dispatch(self, expr):
        if isinstance(expr, sp.Symbol):
            return Value(np.asarray(self.env[expr], np.float64), self._zeros(),
                         np.zeros(self.shape, bool), leaf=True)
        if isinstance(expr, (sp.logic.boolalg.BooleanTrue, sp.logic.boolalg.BooleanFalse)):
            return (np.full(self.shape, bool(expr)), np.zeros(self.shape, bool))
        if expr.is_Number or isinstance(expr, sp.NumberSymbol):
            return Value(self._round(float(expr)), self._zeros(), np.zeros(self.shape, bool), leaf=True)
        if isinstance(expr, sp.Add):
            return self._add([self._eval(a) for a in expr.args])
        if isinstance(expr, sp.Mul):
            return self._mul([self._eval(a) for a in expr.args])
        if isinstance(expr, sp.Pow):
            return self._pow(expr)
        name = type(expr).__name__
        if name in _UNARY:
            return self._unary(name, self._eval(expr.args[0]))
        handler = getattr(self, f"_{name}", None)
        if handler is None:
            raise TypeError(f"no reference evaluation for {name}: {expr}")
        return handler(expr)

    # -- arithmetic -------------------------------------------------------------------------------
    def _add(self, args: List[Value]) -> Value:
        v = args[0].v
        for a in args[1:]:
            v = self._round(v + a.v)
        size = sum(np.abs(a.v) for a in args)
        e = sum(a.e for a in args) + (len(args) - 1) * self.eps * size + self.tiny
        u = np.logical_or.reduce([a.u for a in args])
        # the exact sum may overflow or not (halved, so the float64 sum itself cannot overflow)
        half = np.abs(sum(a.v / 2 for a in args))
        finite = np.all([np.isfinite(a.v) for a in args], axis=0)
        u = u | (finite & (np.abs(half - np.finfo(self.dtype).max / 2) <= (e + self.eps * size) / 2))
        # another order of the terms may overflow on the way ((a + b) - c against a + (b - c))
        if len(args) > 2:
            highest = np.maximum(sum(np.maximum(a.v, 0) for a in args), -sum(np.minimum(a.v, 0) for a in args))
            u = u | (finite & np.isfinite(v) & (highest / 2 >= np.finfo(self.dtype).max / 2 * (1 - 4 * self.eps)))
        return self._finish(v, e, u)

    def _mul(self, args: List[Value]) -> Value:
        v = args[0].v
        for a in args[1:]:
            v = self._round(v * a.v)
        e = self._zeros()
        u = np.logical_or.reduce([a.u for a in args])
        relative = self._zeros()
        for i, a in enumerate(args):
            others = np.prod([np.abs(b.v) for j, b in enumerate(args) if j != i], axis=0) if len(args) > 1 else 1
            e = e + a.e * others
            relative = relative + a.e / np.abs(a.v)
            maybe_zero = (a.e > 0) & (np.abs(a.v) <= a.e)
            other_inf = np.any([np.isinf(b.v) for j, b in enumerate(args) if j != i], axis=0)
            u = u | (maybe_zero & other_inf)
        e = e + (len(args) - 1) * self.eps * np.abs(v) + self.tiny
        logs = [np.log2(np.abs(a.v)) for a in args]
        log2_magnitude = sum(logs)
        finite = np.all([np.isfinite(a.v) & (a.v != 0) for a in args], axis=0)
        u = u | (finite & self._overflow_edge(log2_magnitude, relative + len(args) * self.eps))
        if len(args) > 2:
            # another order of the factors may overflow, or underflow into subnormals, on the way
            u = u | (finite & np.isfinite(v) & (sum(np.maximum(l, 0) for l in logs) >= self.log2_max - 1))
            e = np.where(finite & (sum(np.minimum(l, 0) for l in logs) < self.log2_normal + 1), e + np.abs(v), e)
            # an exact 0 times factors whose product overflows: 0 in one order, inf*0 = NaN in
            # another (0 * 1.4e7 / 2.8e-302 against 0 * (1.4e7 / 2.8e-302))
            all_finite = np.all([np.isfinite(a.v) for a in args], axis=0)
            has_zero = np.any([a.v == 0 for a in args], axis=0)
            u = u | (all_finite & has_zero & (sum(np.maximum(l, 0) for l in logs) >= self.log2_max - 1))
        return self._finish(v, e, u)

    def _pow(self, expr: sp.Pow) -> Value:
        base = self._eval(expr.base)
        k = expr.exp
        if k.is_Number:
            kf = float(k)
            if kf == 0.5:
                function = np.sqrt
            elif k == sp.Rational(-1, 2):
                function = lambda b: 1 / np.sqrt(b)  # noqa: E731  (what lambdify and the C printer write)
            else:
                function = lambda b: np.power(b, kf)  # noqa: E731
            ulps = max(abs(kf), MATH_ULPS) + 1
            v = self._round(function(base.v.astype(self.dtype)))
            # fmax: an interval end outside the domain (NaN) does not hide the others
            slope = functools.reduce(np.fmax, [np.abs(kf * np.power(b, kf - 1))
                                               for b in (base.v - base.e, base.v, base.v + base.e)])
            e = slope * base.e + ulps * self.eps * np.abs(v) + self.tiny
            u = base.u | self._edges(function, base)
            if kf < 0:
                # 1/0: the sign of a computed zero (hence of the infinity) depends on the order of operations
                u = u | ((base.v == 0) & (not base.leaf)) | ((base.e > 0) & (np.abs(base.v) <= base.e))
                # b**-4 may be written 1/b**4 (NumPy) or (1/b)**4 (C): b**4 may overflow (result 0
                # instead of a subnormal) or be subnormal itself (few bits left) or underflow to 0 (inf)
                log2_divisor = -kf * np.log2(np.abs(base.v))
                finite_v = np.isfinite(v) & np.isfinite(base.v)
                e = np.where(finite_v & ((log2_divisor > self.log2_max - 1) | (log2_divisor < self.log2_normal + 1)),
                             e + np.abs(v), e)
                u = u | (finite_v & (log2_divisor < self.log2_normal + 1) & (np.abs(v) > 1))
            relative = abs(kf) * base.e / np.abs(base.v) + ulps * self.eps
            u = u | (np.isfinite(base.v) & (base.v != 0) & self._overflow_edge(kf * np.log2(np.abs(base.v)), relative))
            return self._finish(v, e, u)
        power = self._eval(k)
        v = self._round(np.power(base.v.astype(self.dtype), power.v.astype(self.dtype)))
        slope_base = np.abs(power.v * np.power(base.v, power.v - 1))
        slope_exp = np.abs(v * np.log(np.abs(base.v)))
        e = slope_base * base.e + slope_exp * power.e + MATH_ULPS * self.eps * np.abs(v) + self.tiny
        u = base.u | power.u
        u = u | ((base.e > 0) & (np.abs(base.v) <= base.e)) | ((base.v < 0) & (power.e > 0))
        u = u | ((base.v == 0) & (not base.leaf))
        relative = slope_base * base.e / np.abs(v) + slope_exp * power.e / np.abs(v) + MATH_ULPS * self.eps
        log2_magnitude = power.v * np.log2(np.abs(base.v))
        u = u | (np.isfinite(log2_magnitude) & self._overflow_edge(log2_magnitude, relative))
        return self._finish(v, e, u)

    def _edges(self, function, arg: Value) -> np.ndarray:
        """The outcome (finite, +-inf, NaN) may change within the argument's error interval."""
        widen = arg.e + MATH_ULPS * self.eps * (np.abs(arg.v) + 1)
        centre = outcome(self._round(function(arg.v)))
        lo = outcome(self._round(function(arg.v - widen)))
        hi = outcome(self._round(function(arg.v + widen)))
        return np.isfinite(arg.v) & ((lo != centre) | (hi != centre))

    def _unary(self, name: str, arg: Value) -> Value:
        function, derivative = _UNARY[name]
        v = self._round(function(arg.v.astype(self.dtype)))
        slopes = [np.abs(derivative(x)) for x in (arg.v - arg.e, arg.v, arg.v + arg.e)]
        slope = np.max(slopes, axis=0)  # NaN (outside the domain) propagates: no bound
        e = slope * arg.e + MATH_ULPS * self.eps * np.abs(v) + self.tiny
        u = arg.u | self._edges(function, arg)
        if name == "tan":  # a pole inside the interval: the sign may flip
            u = u | (np.sign(np.cos(arg.v - arg.e)) != np.sign(np.cos(arg.v + arg.e)))
        return self._finish(v, e, u)

    # -- non-smooth functions ------------------------------------------------------------------------
    def _Abs(self, expr) -> Value:
        a = self._eval(expr.args[0])
        self.branches.append(np.sign(a.v))
        return self._finish(np.abs(a.v), a.e, a.u)

    def _step(self, a: Value, values: np.ndarray) -> Value:
        self.branches.append(np.sign(a.v))
        undecided = a.u | ((a.e > 0) & (np.abs(a.v) <= a.e))
        return self._finish(values, self._zeros(), undecided)

    def _sign(self, expr) -> Value:
        a = self._eval(expr.args[0])
        return self._step(a, np.sign(a.v))

    def _Heaviside(self, expr) -> Value:
        a = self._eval(expr.args[0])
        h0 = float(expr.args[1]) if len(expr.args) > 1 else 0.5
        return self._step(a, np.heaviside(a.v, h0))

    def _extremum(self, expr, fold) -> Value:
        args = [self._eval(a) for a in expr.args]
        v = args[0].v
        for a in args[1:]:
            v = fold(v, a.v)
        self.branches.append(np.argmax([a.v == v for a in args], axis=0))
        return self._finish(v, np.max([a.e for a in args], axis=0), np.logical_or.reduce([a.u for a in args]))

    def _Max(self, expr) -> Value:
        return self._extremum(expr, np.maximum)

    def _Min(self, expr) -> Value:
        return self._extremum(expr, np.minimum)

    # -- conditions and Piecewise --------------------------------------------------------------------
    def _Relational(self, expr):
        left, right = self._eval(expr.lhs), self._eval(expr.rhs)
        truth = _RELATIONS[type(expr)](left.v, right.v)
        close = np.abs(left.v - right.v) <= left.e + right.e
        undecided = left.u | right.u | (np.isfinite(left.v) & np.isfinite(right.v) & close
                                        & ((left.e > 0) | (right.e > 0)))
        return truth, undecided

    _StrictLessThan = _LessThan = _StrictGreaterThan = _GreaterThan = _Equality = _Unequality = _Relational

    def _And(self, expr):
        parts = [self._eval(a) for a in expr.args]
        return np.logical_and.reduce([p[0] for p in parts]), np.logical_or.reduce([p[1] for p in parts])

    def _Or(self, expr):
        parts = [self._eval(a) for a in expr.args]
        return np.logical_or.reduce([p[0] for p in parts]), np.logical_or.reduce([p[1] for p in parts])

    def _Not(self, expr):
        truth, undecided = self._eval(expr.args[0])
        return ~truth, undecided

    def _Piecewise(self, expr) -> Value:
        v = np.full(self.shape, np.nan)
        e, u = self._zeros(), np.zeros(self.shape, bool)
        chosen = np.full(self.shape, -1)
        open_ = np.ones(self.shape, bool)       # no earlier condition was true
        doubt = np.zeros(self.shape, bool)      # an earlier condition was undecided
        for index, (branch, cond) in enumerate(expr.args):
            truth, undecided = self._eval(cond)
            doubt = doubt | (open_ & undecided)
            take = open_ & truth
            value = self._eval(branch)
            v = np.where(take, value.v, v)
            e = np.where(take, value.e, e)
            u = np.where(take, value.u, u)
            chosen = np.where(take, index, chosen)
            open_ = open_ & ~truth
        self.branches.append(chosen)
        return self._finish(v, e, u | doubt)


def evaluate(expr: sp.Basic, env: Mapping[sp.Symbol, np.ndarray], dtype: str,
             shape: Tuple[int, ...]) -> Evaluation:
    """Evaluate ``expr`` with its symbols bound by ``env`` (arrays or scalars) in ``dtype``."""
    return Evaluator(env, dtype, shape).evaluate(expr)


def disagreements(got: np.ndarray, reference: Evaluation, safety: float = 2.0) -> np.ndarray:
    """Positions where ``got`` is not a correct evaluation: another NaN/inf outcome where the
    outcome is decided, or a value further than ``safety`` times the bound (two correct
    evaluations differ by at most twice the bound; ``safety`` covers first-order slack)."""
    got = np.asarray(got, np.float64)
    decided = ~reference.undecided
    wrong_outcome = decided & (outcome(got) != outcome(reference.value))
    both_finite = np.isfinite(got) & np.isfinite(reference.value)
    with np.errstate(invalid="ignore"):
        too_far = decided & both_finite & (np.abs(got - reference.value) > 2 * safety * reference.bound)
    return wrong_outcome | too_far
