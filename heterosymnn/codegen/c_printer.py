"""SymPy printer that turns one slotted expression into a C99 expression.

The printer is the first member of a *family*: everything that depends on the
target (math function names, literal suffix, the helper prelude and its
qualifiers, how NaN is spelled) lives in a handful of overridable attributes
and methods, so a CUDA printer can subclass :class:`CPrinter` and keep the
exact same semantics.

Semantics follow NumPy float64 evaluation of the expression, the reference
every backend agrees with: ``Max``/``Min`` propagate NaN like ``np.maximum``,
``sign``/``Heaviside`` return NaN for NaN, ``Piecewise`` behaves like
``np.select(..., default=nan)``.
"""
from __future__ import annotations

from typing import AbstractSet, Dict, Mapping, Optional

import sympy as sp
from sympy.printing.c import C99CodePrinter
from sympy.printing.precedence import PRECEDENCE

from heterosymnn.codegen import c_prelude
from heterosymnn.codegen.common import (
    DTYPES, LogicPrinting, PrintedUsage, UnsupportedExpressionError, check_dtype, format_literal,
)
from heterosymnn.codegen.lowering import MAX_EXPANDED_POWER
from heterosymnn.symbolic.functions import BY_SYMPY, MATH_FUNCTIONS as _TABLE, POWERS
from heterosymnn.symbolic.grammar import EVALUABLE_NODES

#: SymPy function class name -> C99 math library base name (double flavour);
#: powers are printed by ``_print_Pow``.
MATH_FUNCTIONS: Dict[str, str] = {f.sympy: f.c for f in _TABLE if f.c and f.sympy not in POWERS}
_SQRT, _POW = BY_SYMPY["sqrt"].c, BY_SYMPY["Pow"].c


class CPrinter(LogicPrinting, C99CodePrinter):
    """Print slotted SymPy expressions as C99 expressions for one dtype.

    Parameters
    ----------
    dtype : {"float32", "float64"}
        Arithmetic type of the generated code.
    symbols : mapping of sympy.Symbol to str
        C name of every free symbol (variables, slots ``p<i>`` -> ``c<i>``,
        temporaries); any other symbol is an error.
    aliased_math : set of str, optional
        Math functions (base names, ``"sin"``) to call through an alias that the
        vector-math prelude declares as a non-builtin function (see ``c_source``).
    usage : PrintedUsage, optional
        Where to record what the printed expressions need; the printers of one
        source share one. A new one by default.

    Attributes
    ----------
    math_used : set of str
        C math functions the printed expressions call directly (``"expf"``).
    math_aliases : dict of str to str
        Names printed instead of a math function, and the function they
        stand for (``"hs_sin_f32"`` -> ``"sinf"``).
    helpers_used : set of str
        Helper kinds the printed expressions need (``"max"``, ``"sign"``, ...).
    """

    # Target-specific knobs, overridden by other members of the family.
    helper_prefix = "hs_"
    helper_qualifier = "HS_INLINE"
    nan_literal = "NAN"
    inf_literal = "INFINITY"
    # No M_PI & co: they are not C99 and need _USE_MATH_DEFINES on MSVC. A class
    # attribute, as SymPy computes its default table on every construction otherwise.
    math_macros: Dict[sp.Expr, str] = {}

    def __init__(self, dtype: str, symbols: Mapping[sp.Symbol, str], *,
                 aliased_math: AbstractSet[str] = frozenset(),
                 usage: Optional[PrintedUsage] = None) -> None:
        check_dtype(dtype)
        super().__init__()
        self.dtype = dtype
        self.ctype, self.tag = DTYPES[dtype]
        self.symbol_names: Dict[sp.Symbol, str] = dict(symbols)
        self.aliased_math = frozenset(aliased_math)
        self.usage = PrintedUsage() if usage is None else usage
        self.math_used = self.usage.math
        self.math_aliases = self.usage.aliases
        self.helpers_used = self.usage.helpers

    # -- public entry points ---------------------------------------------
    def expression(self, expr: sp.Basic) -> str:
        """C source of ``expr`` as a single expression of type ``ctype``."""
        return self._print(expr)

    def math_name(self, base: str) -> str:
        """C name of a math library function for this dtype (``sin`` -> ``sinf``)."""
        return base + ("f" if self.dtype == "float32" else "")

    def helper_name(self, kind: str) -> str:
        """C name of a semantic helper (``max`` -> ``hs_max_f32``)."""
        return f"{self.helper_prefix}{kind}_{self.tag}"

    def literal_suffix(self) -> str:
        return "f" if self.dtype == "float32" else ""

    def helper_definitions(self) -> str:
        """Definitions of the helpers used so far, in a stable order."""
        return c_prelude.render_helpers(
            sorted(self.helpers_used), ctype=self.ctype, qualifier=self.helper_qualifier,
            name=self.helper_name, literal=self._float_literal)

    # -- literals ------------------------------------------------------------
    def _float_literal(self, value: float) -> str:
        return format_literal(value, self.dtype, suffix=self.literal_suffix(),
                              inf=f"(({self.ctype}){self.inf_literal})", nan=self._nan())

    def _nan(self) -> str:
        return f"(({self.ctype}){self.nan_literal})"

    def _print_number(self, expr: sp.Expr) -> str:
        try:
            value = float(sp.N(expr, 40))
        except (OverflowError, TypeError) as exc:  # pragma: no cover - defensive
            raise UnsupportedExpressionError(f"not a real number: {expr}") from exc
        return self._float_literal(value)

    _print_Integer = _print_number
    _print_Zero = _print_number
    _print_Rational = _print_number
    _print_Float = _print_number
    _print_NumberSymbol = _print_number
    _print_Pi = _print_number
    _print_Exp1 = _print_number
    _print_GoldenRatio = _print_number

    # -- symbols and unsupported nodes -------------------------------------
    def _print(self, expr, **kwargs) -> str:
        # The grammar's node list is the contract: SymPy's C printer knows more
        # (gamma, floor, factorial ...) but NumPy-equivalent semantics are only
        # guaranteed, and tested, for these.
        if isinstance(expr, sp.Basic) and not isinstance(expr, EVALUABLE_NODES):
            self._print_not_supported(expr)
        return super()._print(expr, **kwargs)

    def _print_Symbol(self, expr: sp.Symbol) -> str:
        try:
            return self.symbol_names[expr]
        except KeyError:
            raise UnsupportedExpressionError(
                f"symbol {expr} has no C name (known: {sorted(map(str, self.symbol_names))})"
            ) from None

    def _print_not_supported(self, expr: sp.Basic) -> str:
        # SymPy would print a comment and carry on; a kernel must never compile
        # with a silently missing piece.
        raise UnsupportedExpressionError(f"cannot print {type(expr).__name__}: {expr}")

    _print_Basic = _print_not_supported
    _print_ComplexInfinity = _print_not_supported
    _print_Infinity = _print_not_supported
    _print_NegativeInfinity = _print_not_supported
    _print_NaN = _print_not_supported
    _print_ImaginaryUnit = _print_not_supported
    _print_ITE = _print_not_supported

    # -- arithmetic ------------------------------------------------------------
    def _print_Mul(self, expr: sp.Mul) -> str:
        # Constant factors SymPy keeps apart (sqrt(2)*x/(2*sqrt(pi)) in gelu's derivative)
        # become one literal, rounded once from the exact value: a multiply per element
        # where the product would divide by sqrt(pi) and multiply twice more.
        folded = self._fold_constant_factors(expr)
        if folded is not None:
            return folded
        # A rational coefficient becomes one literal factor instead of SymPy's
        # "(1.0/3.0)*x": a multiply per element, not a divide.
        coeff, rest = expr.as_coeff_Mul()
        if coeff.is_Rational and not coeff.is_Integer and rest is not sp.S.One:
            body = self.parenthesize(rest, PRECEDENCE["Mul"])
            return f"{self._print(coeff)}*{body}"
        return super()._print_Mul(expr)

    #: Folded constants stay well inside the normal range of both dtypes, where one
    #: rounding of the product is never worse than the rounded steps it replaces.
    _FOLD_RANGE = (2.0 ** -60, 2.0 ** 60)

    def _fold_constant_factors(self, expr: sp.Mul) -> Optional[str]:
        """``expr`` printed as one literal times the rest, when it has irrational constant factors."""
        numeric = [f for f in expr.args if f.is_number]
        rest = [f for f in expr.args if not f.is_number]
        if not rest or all(f.is_Rational or f.is_Float for f in numeric):
            return None
        try:
            value = float(sp.N(sp.Mul(*numeric), 40))
        except (TypeError, ValueError):  # pragma: no cover - a complex constant is rejected earlier
            return None
        low, high = self._FOLD_RANGE
        if not low <= abs(value) <= high:
            return None
        body = self.parenthesize(sp.Mul(*rest), PRECEDENCE["Mul"])
        return f"{self._float_literal(value)}*{body}"

    def _print_Pow(self, expr: sp.Pow) -> str:
        base, exp = expr.base, expr.exp
        b = self.parenthesize(base, PRECEDENCE["Mul"])
        one = self._float_literal(1.0)
        if exp.is_Number and exp.is_finite:
            value = float(exp)
            # Mirrors NumPy: Rational 1/2 and a float 0.5 go through sqrt, a
            # Rational -1/2 prints as 1/sqrt like lambdify does, but a float
            # -0.5 is np.power, i.e. pow() (they differ at -0.0 and -inf).
            if value == 0.5:
                return f"{self._math(_SQRT)}({self._print(base)})"
            if exp == sp.Rational(-1, 2):
                return f"({one}/{self._math(_SQRT)}({self._print(base)}))"
            if value.is_integer() and 1 <= abs(value) <= MAX_EXPANDED_POWER:
                n = int(abs(value))
                factor = b if value > 0 else f"({one}/{b})"
                if n == 4:
                    square = f"({factor}*{factor})"
                    return f"({square}*{square})"
                return "(" + "*".join([factor] * n) + ")" if n > 1 else factor
        return f"{self._math(_POW)}({self._print(base)}, {self._print(exp)})"

    def _math(self, base: str) -> str:
        name = self.math_name(base)
        if base in self.aliased_math:
            alias = self.helper_name(base)
            self.math_aliases[alias] = name
            return alias
        self.math_used.add(name)
        return name

    def _print_math_function(self, expr: sp.Function) -> str:
        base = MATH_FUNCTIONS[type(expr).__name__]
        args = ", ".join(self._print(arg) for arg in expr.args)
        return f"{self._math(base)}({args})"

    def _helper_call(self, kind: str, *args: sp.Basic) -> str:
        self.helpers_used.add(kind)
        printed = ", ".join(self._print(arg) for arg in args)
        return f"{self.helper_name(kind)}({printed})"

    def _print_Max(self, expr: sp.Max) -> str:
        return self._fold("max", expr.args)

    def _print_Min(self, expr: sp.Min) -> str:
        return self._fold("min", expr.args)

    def _fold(self, kind: str, args: tuple) -> str:
        # Max(a, b, c) -> max(a, max(b, c)): NaN anywhere still wins. A literal first
        # argument is never NaN (the grammar has no nan): it takes the one-blend helper.
        if len(args) == 1:
            return self._print(args[0])
        first, rest = args[0], self._fold(kind, args[1:])
        if first.is_Number:
            kind += "_k"
        self.helpers_used.add(kind)
        return f"{self.helper_name(kind)}({self._print(first)}, {rest})"

    def _print_sign(self, expr: sp.sign) -> str:
        return self._helper_call("sign", expr.args[0])

    def _print_Heaviside(self, expr: sp.Heaviside) -> str:
        h0 = expr.args[1] if len(expr.args) > 1 else sp.S.Half
        if h0.is_zero or h0 == 1:  # relu' is Heaviside(x, 0): one compare fewer
            return self._helper_call(f"heaviside{int(h0)}", expr.args[0])
        return self._helper_call("heaviside", expr.args[0], h0)


for _name in MATH_FUNCTIONS:
    setattr(CPrinter, f"_print_{_name}", CPrinter._print_math_function)
del _name
