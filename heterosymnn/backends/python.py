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
    """NumPy printer with the library's semantics for steps and error functions.

    Given a ``constants`` dict, it prints every constant that is not an integer
    (``0.1``, ``pi``, ``log(2)``, ``1/sqrt(pi)``) as a name and records it there, so the
    caller can bind each name to the constant in the layer's dtype, rounded once from
    its exact value, as the C and CUDA kernels spell it. Printed as they are,
    ``numpy.log(2)`` and ``numpy.sqrt(numpy.pi)`` are float64 scalars, which turn a float32
    layer's arithmetic into float64 (and ``1e60`` would be finite where float32 makes it
    inf). Integers are printed as they are: they keep ``num**2`` an integer power and never
    change the dtype.
    """

    def __init__(self, settings=None, constants: Optional[Dict[sp.Expr, str]] = None):
        super().__init__(settings)
        self.constants = constants

    def _print(self, expr, **kwargs):
        if (self.constants is not None and isinstance(expr, sp.Expr) and expr.is_number
                and not expr.is_Integer and expr is not sp.S.NaN):
            return self.constants.setdefault(expr, f"hs_constant_{len(self.constants)}")
        return super()._print(expr, **kwargs)

    def _print_Heaviside(self, expr):
        # SymPy's own version prints a select() that maps NaN to a number; np.heaviside keeps NaN.
        h0 = expr.args[1] if len(expr.args) > 1 else sp.S.Half
        return f"numpy.heaviside({self._print(expr.args[0])}, {float(h0)!r})"

    # Max/Min/And/Or of any number of arguments call a helper that folds them pairwise
    # (_folded): numpy.maximum/minimum propagate NaN, as every backend must, and binary calls
    # broadcast, where SymPy's logical_or.reduce((a, b)) first stacks its operands into one
    # array and fails when a condition on constants only (a column) meets one on the input
    # (a block). Nesting the binary calls in the text instead fails to compile past Python's
    # 200 nested parentheses, which a split condition (symbolic/conditions.py) can reach.
    def _print_Max(self, expr):
        return self._call("hs_maximum", expr.args)

    def _print_Min(self, expr):
        return self._call("hs_minimum", expr.args)

    def _print_And(self, expr):
        return self._call("hs_all", expr.args)

    def _print_Or(self, expr):
        return self._call("hs_any", expr.args)

    def _call(self, function: str, args) -> str:
        return f"{function}({', '.join(self._print(arg) for arg in args)})"

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


def _folded(binary: Callable) -> Callable:
    return lambda *args: functools.reduce(binary, args)


_NAMESPACE = {"hs_erf": _erf, "hs_erfc": _erfc, "hs_maximum": _folded(np.maximum), "hs_minimum": _folded(np.minimum),
              "hs_all": _folded(np.logical_and), "hs_any": _folded(np.logical_or)}


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
    expr = structure.derivative if derivative else structure.expr
    constants: Dict[sp.Expr, str] = {}
    printer = _Printer(constants=constants)
    printer.doprint(expr)  # names the constants; lambdify prints the same names again
    namespace = dict(_NAMESPACE, hs_select=functools.partial(_select, dtype))
    namespace.update((name, _constant(value, dtype)) for value, name in constants.items())
    args = list(structure.variables) + list(structure.slots)
    return sp.lambdify(args, expr, modules=[namespace, "numpy"], printer=printer)


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
