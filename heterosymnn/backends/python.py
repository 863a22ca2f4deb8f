"""CPU_PYTHON: NumPy evaluation, vectorised per structure.

A layer of 1024 nodes using 8 structures costs 8 vectorised evaluations per
call (nodes of one structure are evaluated together, with their constants as
column vectors), never one Python call per node. It is the reference every
compiled backend is tested against and the last fallback.
"""
from __future__ import annotations

import functools
import importlib
import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import sympy as sp
from sympy.printing.numpy import NumPyPrinter

from ..symbolic.functions import MATH_FUNCTIONS
from ..symbolic.plan import LayerPlan
from ..symbolic.structure import Structure
from .base import CPU_PYTHON


def _function(path: str) -> Callable:
    """The function ``path`` names; without SciPy, Python's math function of that name per element."""
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError:  # pragma: no cover - depends on the environment
        return np.vectorize(getattr(math, name), otypes=[np.float64])


def _folded(binary: Callable) -> Callable:
    return lambda *args: functools.reduce(binary, args)


def _numpy_calls() -> Tuple[Dict[str, str], Dict[str, Callable]]:
    """What the NumPy code calls for each function of the table (by SymPy name), and what it binds.

    NumPy's element-wise functions and builtins are called as they are; another module's
    function, or a variadic one folded pairwise (see _Printer), is bound as ``hs_<name>``.
    """
    calls: Dict[str, str] = {}
    bound: Dict[str, Callable] = {}
    for row in MATH_FUNCTIONS:
        if row.numpy is None:
            continue
        variadic = None in row.names.values()
        if "." not in row.numpy or (row.numpy.startswith("numpy.") and not variadic):
            calls[row.sympy] = row.numpy
            continue
        name = calls[row.sympy] = "hs_" + row.numpy.rpartition(".")[2]
        function = _function(row.numpy)
        bound[name] = _folded(function) if variadic else function
    return calls, bound


_CALLS, _BOUND = _numpy_calls()
_NAMESPACE = {**_BOUND, "hs_all": _folded(np.logical_and), "hs_any": _folded(np.logical_or)}


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
        return f"{self._module_format(_CALLS['Heaviside'])}({self._print(expr.args[0])}, {float(h0)!r})"

    # Max/Min/And/Or of any number of arguments call a helper that folds them pairwise
    # (_folded): numpy.maximum/minimum propagate NaN, as every backend must, and binary calls
    # broadcast, where SymPy's logical_or.reduce((a, b)) first stacks its operands into one
    # array and fails when a condition on constants only (a column) meets one on the input
    # (a block). Nesting the binary calls in the text instead fails to compile past Python's
    # 200 nested parentheses, which a split condition (symbolic/conditions.py) can reach.
    def _print_Max(self, expr):
        return self._call(_CALLS["Max"], expr.args)

    def _print_Min(self, expr):
        return self._call(_CALLS["Min"], expr.args)

    def _print_And(self, expr):
        return self._call("hs_all", expr.args)

    def _print_Or(self, expr):
        return self._call("hs_any", expr.args)

    def _call(self, function: str, args) -> str:
        name = self._module_format(function) if "." in function else function
        return f"{name}({', '.join(self._print(arg) for arg in args)})"

    def _print_table_function(self, expr):
        return self._call(_CALLS[type(expr).__name__], expr.args)

    def _print_Piecewise(self, expr):
        # hs_select casts every branch to the layer's dtype: numpy.select alone turns a number
        # branch into a float64 array, and a float32 layer would then compute in float64.
        conditions = ", ".join(self._print(pair.cond) for pair in expr.args)
        values = ", ".join(self._print(pair.expr) for pair in expr.args)
        return f"hs_select([{conditions}], [{values}], {self._print(sp.S.NaN)})"


for _name in _CALLS:
    if f"_print_{_name}" not in vars(_Printer):
        setattr(_Printer, f"_print_{_name}", _Printer._print_table_function)
del _name


def _select(dtype: np.dtype, conditions, values, default):
    return np.select(conditions, [np.asarray(value, dtype) for value in values], np.asarray(default, dtype))


def _constant(value: sp.Expr, dtype: np.dtype):
    with np.errstate(over="ignore"):  # beyond the dtype's range is inf, as in C
        return dtype.type(float(value.evalf(30)))


def numpy_function(structure: Structure, derivative: bool = False, dtype: str = "float64",
                   *, expr: Optional[sp.Expr] = None) -> Callable:
    """A NumPy function of ``(*variables, *slots)`` for a structure's forward or derivative
    (or ``expr``, another expression of the structure's symbols), computing in ``dtype`` throughout.

    The code is generated by SymPy's printer from our own validated tree (never
    from user text), so executing it is safe.
    """
    dtype = np.dtype(dtype)
    if expr is None:
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
        self._structure, self._dtype = structure, dtype
        contiguous = rows.size and rows[-1] - rows[0] + 1 == rows.size
        self.rows: Rows = slice(int(rows[0]), int(rows[-1]) + 1) if contiguous else rows
        self.row_indices = rows

    @functools.cached_property
    def constant_derivatives(self) -> Tuple[Callable, ...]:
        """``d f / d p_k`` for each slot, made on first use (training asks, inference never does)."""
        return tuple(numpy_function(self._structure, dtype=self._dtype, expr=expr)
                     for expr in self._structure.constant_derivatives)

    def columns(self, params: np.ndarray, dtype: np.dtype) -> Tuple[np.ndarray, ...]:
        """This group's constants as ``(n_rows, 1)`` columns of ``dtype`` (new arrays)."""
        block = params[self.row_indices, :self.n_slots].astype(dtype)
        return tuple(block[:, j:j + 1] for j in range(self.n_slots))


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
        self.constant_offsets = plan.constant_offsets()[:-1]
        self.update_params(params)

    def update_params(self, params: np.ndarray) -> None:
        # Every group's columns in one tuple, set in one store and read once per call: a call
        # on another thread uses the old set or the new one, never some groups of each.
        self._columns = tuple(group.columns(params, self.dtype) for group in self.groups)

    def _run(self, which: str, a: np.ndarray, b: Optional[np.ndarray], out: np.ndarray,
             scale: Optional[np.ndarray] = None, constants_grad: Optional[np.ndarray] = None,
             features_last: bool = False) -> None:
        columns = self._columns
        rows = self.n_rows
        if features_last:  # node r owns column r: the transposed view has it as row r (no copy)
            def by_node(array):
                return None if array is None else array.reshape(-1, rows).T
        else:
            def by_node(array):
                return None if array is None else array.reshape(rows, -1)
        a, b, out, scale = by_node(a), by_node(b), by_node(out), by_node(scale)
        with np.errstate(all="ignore"):
            for group, constants in zip(self.groups, columns):
                rows = group.rows
                function = group.forward if which == "forward" else group.derivative
                inputs = (a[rows],) if b is None else (a[rows], b[rows])
                value = function(*inputs, *constants)
                if scale is not None:
                    value = scale[rows] * value
                out[rows] = value
                if constants_grad is not None and group.n_slots:
                    self._constants_grad(group, inputs, constants, scale, out[rows].shape, constants_grad)

    def _constants_grad(self, group: _Group, inputs: tuple, constants: tuple, scale: Optional[np.ndarray],
                        shape: tuple, constants_grad: np.ndarray) -> None:
        """Per node, the sum over its row of ``grad * d f / d p_k``, for every slot ``k``.

        Each term in the layer's dtype (as the compiled kernels compute it), summed in
        float64 by NumPy's pairwise sum: the same inputs give the same sums, always.
        """
        where = self.constant_offsets[group.row_indices]
        for slot, function in enumerate(group.constant_derivatives):
            term = np.broadcast_to(np.asarray(function(*inputs, *constants), self.dtype), shape)
            if scale is not None:
                term = scale[group.rows] * term
            constants_grad[where + slot] = np.sum(term, axis=1, dtype=np.float64)

    def forward(self, a: np.ndarray, b: Optional[np.ndarray], out: np.ndarray, features_last: bool = False) -> None:
        self._run("forward", a, b if self.loss else None, out, features_last=features_last)

    def backward(self, a: np.ndarray, b: np.ndarray, out: np.ndarray,
                 constants_grad: Optional[np.ndarray] = None, features_last: bool = False,
                 grad: Optional[np.ndarray] = None) -> None:
        if self.loss:  # ``grad``: the loss's weights (upstream gradient), or None
            self._run("derivative", a, b, out, scale=grad, constants_grad=constants_grad,
                      features_last=features_last)
        else:
            self._run("derivative", a, None, out, scale=b, constants_grad=constants_grad,
                      features_last=features_last)


def build(layer, dtype: str, params: np.ndarray, device_id: int = 0) -> NumpyKernels:
    """Backend entry point used by the compiler (NumPy needs no build)."""
    return NumpyKernels(layer.plan, layer.structures, dtype, params)
