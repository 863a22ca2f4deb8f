"""The math functions of the formula language, as data: one row per SymPy node.

Everything that knows a function is derived from :data:`MATH_FUNCTIONS`: the
grammar (which names a formula may call, with how many arguments), the C and
CUDA printers (the math library call), the NumPy backend (what its code calls)
and the vector-math declarations (which calls glibc's libmvec can vectorise).
Adding a function is adding a row (and, for a helper, its printer methods).

Plain data, free of SymPy, so a warm start can import it; the SymPy
constructors are resolved by name in :mod:`.grammar`.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Mapping, Optional, Tuple

#: Allowed argument counts of a formula name; None means 2 or more.
Arity = Optional[Tuple[int, ...]]
ONE: Arity = (1,)
MANY: Arity = None

#: glibc versions whose libmvec has a SIMD variant of a function.
LIBMVEC_BASE = "2.22"
LIBMVEC_235 = "2.35"


@dataclasses.dataclass(frozen=True)
class MathFunction:
    """One function as every part of the package spells it.

    Attributes
    ----------
    sympy : str
        Name of the SymPy node (``type(expr).__name__``), or of the constructor
        for ``sqrt``, which builds a ``Pow``.
    names : mapping of str to Arity
        Spellings in formula text and the argument counts each accepts; empty
        for an operator (``**``).
    c : str or None
        C99 math library name, double flavour (float32 appends ``f``). None: the
        printers call a semantic helper of their own (NaN rules libm lacks).
    cuda : str or None
        CUDA math API name, where it differs from ``c``.
    numpy : str or None
        What the NumPy code calls: ``numpy.*``, a builtin, or another module's
        function (bound by the NumPy backend). None: SymPy's printer knows it.
    vector : str or None
        glibc version from which libmvec has a SIMD variant of ``c``.
    c_args : int
        Arguments of the C function (its SIMD variant takes as many vectors).
    """

    sympy: str
    names: Mapping[str, Arity]
    c: Optional[str] = None
    cuda: Optional[str] = None
    numpy: Optional[str] = None
    vector: Optional[str] = None
    c_args: int = 1


def _libm(name: str, numpy: str, vector: str = LIBMVEC_235) -> MathFunction:
    """A function of one argument that C calls by its formula name."""
    return MathFunction(name, {name: ONE}, c=name, numpy=numpy, vector=vector)


_F = MathFunction
# Order matters only for messages: formula names are listed in this order.
MATH_FUNCTIONS: Tuple[MathFunction, ...] = (
    _libm("exp", "numpy.exp", LIBMVEC_BASE),
    # exp(u) - 1 and log(1 + u) without the cancellation near u = 0 (stable forms).
    _libm("expm1", "numpy.expm1"),
    _libm("log1p", "numpy.log1p"),
    _F("log", {"log": (1, 2), "ln": ONE}, c="log", numpy="numpy.log", vector=LIBMVEC_BASE),
    _F("sqrt", {"sqrt": ONE}, c="sqrt"),
    _F("Abs", {"Abs": ONE, "abs": ONE}, c="fabs", numpy="abs"),
    _libm("sin", "numpy.sin", LIBMVEC_BASE), _libm("cos", "numpy.cos", LIBMVEC_BASE),
    _libm("tan", "numpy.tan"),
    _libm("asin", "numpy.arcsin"), _libm("acos", "numpy.arccos"), _libm("atan", "numpy.arctan"),
    _libm("sinh", "numpy.sinh"), _libm("cosh", "numpy.cosh"), _libm("tanh", "numpy.tanh"),
    _libm("asinh", "numpy.arcsinh"), _libm("acosh", "numpy.arccosh"), _libm("atanh", "numpy.arctanh"),
    # NaN-propagating helpers in C (libm's fmax, copysign ... drop or change NaN).
    _F("Max", {"Max": MANY, "max": MANY}, numpy="numpy.maximum"),
    _F("Min", {"Min": MANY, "min": MANY}, numpy="numpy.minimum"),
    _F("sign", {"sign": ONE}, numpy="numpy.sign"),
    _F("Heaviside", {"Heaviside": (1, 2)}, numpy="numpy.heaviside"),
    _libm("erf", "scipy.special.erf"),
    _libm("erfc", "scipy.special.erfc"),
    _F("Pow", {}, c="pow", vector=LIBMVEC_BASE, c_args=2),  # the ** operator
)
del _F

#: Rows the printers write as powers: ``**`` builds a Pow, and so does SymPy's sqrt.
POWERS = ("Pow", "sqrt")
#: SymPy node name -> its row.
BY_SYMPY: Dict[str, MathFunction] = {f.sympy: f for f in MATH_FUNCTIONS}


def formula_names() -> Dict[str, Tuple[str, Arity]]:
    """Formula name -> (SymPy name, allowed argument counts), in table order."""
    return {name: (f.sympy, arity) for f in MATH_FUNCTIONS for name, arity in f.names.items()}
