"""CPU_PYTHON: NumPy evaluation, vectorised per structure.

A layer of 1024 nodes using 8 structures costs 8 vectorised evaluations per
call (nodes of one structure are evaluated together, with their constants as
column vectors), never one Python call per node. It is the reference every
compiled backend is tested against and the last fallback.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import sympy as sp
from sympy.printing.numpy import NumPyPrinter

from ..symbolic.plan import LayerPlan
from ..symbolic.structure import Structure
from .base import CPU_PYTHON

try:  # SciPy's erf is vectorised; without SciPy fall back to math.erf per element.
    from scipy.special import erf as _erf, erfc as _erfc
except ImportError:  # pragma: no cover - depends on the environment
    _erf = np.vectorize(math.erf, otypes=[np.float64])
    _erfc = np.vectorize(math.erfc, otypes=[np.float64])


class _Printer(NumPyPrinter):
    """NumPy printer with the library's semantics for steps and error functions."""

    def _print_Heaviside(self, expr):
        # SymPy's own version prints a select() that maps NaN to a number; np.heaviside keeps NaN.
        h0 = expr.args[1] if len(expr.args) > 1 else sp.S.Half
        return f"numpy.heaviside({self._print(expr.args[0])}, {self._print(sp.Float(h0))})"

    def _print_Max(self, expr):
        return self._fold("numpy.maximum", expr.args)

    def _print_Min(self, expr):
        return self._fold("numpy.minimum", expr.args)

    def _fold(self, function: str, args) -> str:
        # numpy.maximum/minimum propagate NaN, as every backend must; binary calls broadcast.
        text = self._print(args[0])
        for arg in args[1:]:
            text = f"{function}({text}, {self._print(arg)})"
        return text

    def _print_And(self, expr):
        return self._fold("numpy.logical_and", expr.args)

    def _print_Or(self, expr):
        # SymPy's logical_or.reduce((a, b)) first stacks its operands into one array, which
        # fails when a condition on constants only (a column) meets one on the input (a block).
        return self._fold("numpy.logical_or", expr.args)

    def _print_Symbol(self, expr):
        # A hoisted constant (see _hoist_constants) is printed under a name of its own:
        # lambdify binds every symbol's own name to the SymPy symbol.
        if expr.name.startswith(_CONSTANT_PREFIX):
            return f"hs_constant_{expr.name[len(_CONSTANT_PREFIX):]}"
        return super()._print_Symbol(expr)

    def _print_Piecewise(self, expr):
        # hs_select casts every branch to the layer's dtype: numpy.select alone turns a number
        # branch into a float64 array, and a float32 layer would then compute in float64.
        conditions = ", ".join(self._print(pair.cond) for pair in expr.args)
        values = ", ".join(self._print(pair.expr) for pair in expr.args)
        return f"hs_select([{conditions}], [{values}], {self._print(sp.S.NaN)})"

    def _print_erf(self, expr):
        return f"hs_erf({self._print(expr.args[0])})"

    def _print_erfc(self, expr):
        return f"hs_erfc({self._print(expr.args[0])})"


def _select(dtype: np.dtype, conditions, values, default):
    return np.select(conditions, [np.asarray(value, dtype) for value in values], np.asarray(default, dtype))


_NAMESPACE = {"hs_erf": _erf, "hs_erfc": _erfc}
_CONSTANT_PREFIX = "hs_k"


def _hoist_constants(expr: sp.Expr) -> Tuple[sp.Expr, Dict[sp.Symbol, sp.Expr]]:
    """``expr`` with every constant that is not an integer (``0.1``, ``pi``, ``log(2)``,
    ``1/sqrt(pi)``) replaced by a named symbol, and those constants.

    The names are bound to constants of the layer's dtype, rounded once from their exact
    value, as the C and CUDA kernels spell them. Printed as they are, ``numpy.log(2)`` and
    ``numpy.sqrt(numpy.pi)`` are float64 scalars, which turn a float32 layer's arithmetic
    into float64 (and ``1e60`` would be finite where float32 makes it inf). Integers stay:
    they keep ``num**2`` an integer power and never change the dtype. Rational exponents
    stay too, so ``num**(1/2)`` still prints as ``sqrt(num)``; Heaviside's value at 0 is a
    number the printer needs as such.
    """
    constants: Dict[sp.Basic, sp.Symbol] = {}

    def visit(node: sp.Basic) -> None:
        if isinstance(node, sp.Expr) and node.is_number:
            if not node.is_Integer and node is not sp.S.NaN:
                constants.setdefault(node, sp.Symbol(f"{_CONSTANT_PREFIX}{len(constants)}", real=True))
            return
        args = node.args
        if isinstance(node, sp.Pow) and node.exp.is_Rational:
            args = (node.base,)
        elif isinstance(node, sp.Heaviside):
            args = args[:1]
        for arg in args:
            visit(arg)

    visit(expr)
    return expr.xreplace(constants), {name: value for value, name in constants.items()}


def _constant(value: sp.Expr, dtype: np.dtype):
    with np.errstate(over="ignore"):  # beyond the dtype's range is inf, as in C
        return dtype.type(float(value.evalf(30)))


def numpy_function(structure: Structure, derivative: bool = False, dtype: str = "float64") -> Callable:
    """A NumPy function of ``(*variables, *slots)`` for a structure's forward or derivative,
    computing in ``dtype`` throughout.

    The code is generated by SymPy's printer from our own validated tree (never
    from user text), so executing it is safe.
    """
    dtype = np.dtype(dtype)
    expr, constants = _hoist_constants(structure.derivative if derivative else structure.expr)
    namespace = dict(_NAMESPACE, hs_select=functools.partial(_select, dtype))
    namespace.update((_Printer()._print(name), _constant(value, dtype)) for name, value in constants.items())
    args = list(structure.variables) + list(structure.slots)
    return sp.lambdify(args, expr, modules=[namespace, "numpy"], printer=_Printer)


def numpy_source(structure: Structure, derivative: bool = False) -> str:
    """The NumPy expression as text (for ``render_source(target="python")``)."""
    expr = structure.derivative if derivative else structure.expr
    return _Printer().doprint(expr)


Rows = Union[slice, np.ndarray]


class _Group:
    """The nodes of one structure: where they are and their constants as columns."""

    def __init__(self, structure: Structure, rows: np.ndarray, dtype: np.dtype):
        self.forward = numpy_function(structure, dtype=dtype)
        self.derivative = numpy_function(structure, derivative=True, dtype=dtype)
        self.n_slots = structure.n_slots
        contiguous = rows.size and rows[-1] - rows[0] + 1 == rows.size
        self.rows: Rows = slice(int(rows[0]), int(rows[-1]) + 1) if contiguous else rows
        self.row_indices = rows
        self.columns: Tuple[np.ndarray, ...] = ()

    def set_params(self, params: np.ndarray, dtype: np.dtype) -> None:
        block = params[self.row_indices, :self.n_slots].astype(dtype)
        self.columns = tuple(block[:, j:j + 1] for j in range(self.n_slots))


class NumpyKernels:
    """Kernels that evaluate each structure once per call over all of its nodes."""

    method = CPU_PYTHON
    array_module = np

    def __init__(self, plan: LayerPlan, structures: Sequence[Structure], dtype: str, params: np.ndarray):
        self.dtype = np.dtype(dtype)
        self.loss = plan.mode == "loss"
        self.n_rows = plan.n_nodes
        self.groups: List[_Group] = [
            _Group(structure, plan.nodes_of(index), self.dtype) for index, structure in enumerate(structures)
        ]
        self.update_params(params)

    def update_params(self, params: np.ndarray) -> None:
        for group in self.groups:
            group.set_params(params, self.dtype)

    def _run(self, which: str, a: np.ndarray, b: Optional[np.ndarray], out: np.ndarray,
             scale: Optional[np.ndarray] = None) -> None:
        rows = self.n_rows
        a, out = a.reshape(rows, -1), out.reshape(rows, -1)
        b = None if b is None else b.reshape(rows, -1)
        scale = None if scale is None else scale.reshape(rows, -1)
        with np.errstate(all="ignore"):
            for group in self.groups:
                rows = group.rows
                function = group.forward if which == "forward" else group.derivative
                inputs = (a[rows],) if b is None or scale is not None else (a[rows], b[rows])
                value = function(*inputs, *group.columns)
                if scale is not None:
                    value = scale[rows] * value
                out[rows] = value

    def forward(self, a: np.ndarray, b: Optional[np.ndarray], out: np.ndarray) -> None:
        self._run("forward", a, b if self.loss else None, out)

    def backward(self, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
        if self.loss:
            self._run("derivative", a, b, out)
        else:
            self._run("derivative", a, None, out, scale=b)


def build(layer, dtype: str, params: np.ndarray, device_id: int = 0) -> NumpyKernels:
    """Backend entry point used by the compiler (NumPy needs no build)."""
    return NumpyKernels(layer.plan, layer.structures, dtype, params)
