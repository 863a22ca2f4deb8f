"""SymbolicJITCompiler: configs in, ``forward_kernel``/``backward_kernel`` out.

The orchestration only: analyse the configs (symbolic front end), pick a
backend with fallbacks (``selection``), check arguments (``arrays``) and keep
the per-node constants that every backend reads as kernel arguments.
"""
from __future__ import annotations

import functools
import math
import numbers
import threading
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .. import config
from ..backends.base import AUTO, CPU_PYTHON, Kernels
from ..errors import InvalidDeviceIDError
from ..symbolic.modes import LOSS, MODES
from . import arrays
from .constants import ConstantsLayout
from .frontend import LayerSource
from .selection import normalize_method, select_backend

DTYPES = ("float32", "float64")


def _normalize_dtype(dtype: Any) -> np.dtype:
    try:
        resolved = np.dtype(dtype) if dtype is not None else None  # np.dtype(None) is float64
    except TypeError:
        resolved = None
    if resolved is None or resolved.name not in DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return resolved


def _config_list(configs: Any) -> Any:
    """A list of the configs; anything that is not a collection of them is kept for the front
    end to reject with a FormulaParsingError (a str or bytes would iterate as characters)."""
    if isinstance(configs, (str, bytes, bytearray)) or not isinstance(configs, Iterable):
        return configs
    return list(configs)


def _check_device_id(device_id: Any) -> int:
    if isinstance(device_id, bool) or not isinstance(device_id, numbers.Integral) or device_id < 0:
        raise InvalidDeviceIDError(f"device_id must be a non-negative integer, got {device_id!r}")
    return int(device_id)


def _fits_float64(value: numbers.Real) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int or Fraction beyond float64
        return False


class SymbolicJITCompiler:
    """Compile one activation (or loss) formula per neuron into fast kernels.

    Parameters
    ----------
    configs : list
        One node config per neuron: a formula string (``"sin(num)"``, ``"relu"``)
        or a ``(formula, constants_dict)`` pair (``("a*tanh(num)", {"a": 2.0})``).
    calculation_method : {"AUTO", "GPU_CUDA", "CPU_JIT", "CPU_PYTHON"}
        Backend to use; an unavailable one falls back GPU_CUDA -> CPU_JIT ->
        CPU_PYTHON with a ``PerformanceWarning`` (unless ``strict``).
    device_id : int
        GPU to run on (GPU_CUDA only).
    mode : {"activation", "loss"}
        Formulas over ``num`` (activations) or over ``y_pred``/``y_true`` (losses).
    dtype : {"float32", "float64"}
        The dtype of every array the kernels take and return.
    strict : bool
        Raise instead of falling back (also ``HETEROSYMNN_STRICT=1``).

    Attributes
    ----------
    forward_kernel, backward_kernel : callable
        Activation: ``forward_kernel(z, out=None)`` -> ``f_j(z[j])`` row by row
        and ``backward_kernel(z, grad, out=None)`` -> ``grad * f_j'(z)``; ``z`` has
        shape ``(n_nodes,)`` or ``(n_nodes, batch)``. Loss: ``forward_kernel(y_pred,
        y_true, out=None)`` and ``backward_kernel(y_pred, y_true, out=None, *,
        grad=None)`` (element-wise loss and d loss / d y_pred; with ``grad``, an
        array of ``y_pred``'s exact shape and the layer's dtype, ``grad * d loss /
        d y_pred``: the upstream gradient of an unreduced loss, in the same call).
        Both backward kernels take a keyword ``constants_grad``: a float64 vector of
        ``len(constant_names)`` (NumPy, or CuPy on GPU_CUDA) overwritten, in the
        same pass, with the sum over the batch of ``grad * d f_j / d c`` (loss: of
        ``d L / d c``, or ``grad * d L / d c`` with ``grad``) for every constant
        ``c``, deterministically. Every kernel takes a keyword
        ``features_last=True`` for PyTorch's layout: inputs of shape
        ``(..., n_nodes)``, node ``j`` owning ``[..., j]`` (no transpose needed).
    calculation_method : str
        The backend actually in use.
    """

    def __init__(self, configs: Sequence[Any], calculation_method: str = AUTO, device_id: int = 0,
                 mode: str = "activation", *, dtype: str = "float32", strict: bool = False):
        if mode not in MODES:
            raise ValueError(f"mode must be 'activation' or 'loss', got {mode!r}")
        self.mode = mode
        self.requested_method = normalize_method(calculation_method)
        self.dtype = _normalize_dtype(dtype)
        self.strict = bool(strict) or config.settings().strict
        self.device_id = _check_device_id(device_id)
        self.configs = _config_list(configs)
        # Compiled backends keep the layer plan in the kernel cache (warm starts skip SymPy).
        cache = None
        if self.requested_method != CPU_PYTHON:
            from ..cache import default_cache

            cache = default_cache()
        self._layer = LayerSource(self.configs, mode, cache)
        self._plan = self._layer.plan
        # Copy-on-write: ``_params`` is never written once handed to the kernels; a change builds
        # a new matrix and swaps it in (see ``_change_params``), so a running call keeps its own.
        self._params = _frozen(self._plan.initial_params())
        self._params_lock = threading.Lock()
        self._constants_layout = ConstantsLayout(self._plan)
        self._elementwise_loss = mode == LOSS and self._plan.n_nodes == 1
        self._kernels = self._select()
        self._ndarray = self._kernels.array_module.ndarray
        # A GPU backend allocates on its own device, whatever device is current.
        self._empty = getattr(self._kernels, "empty", self._kernels.array_module.empty)
        self._n_nodes = self._plan.n_nodes
        self._handles_overlap = bool(getattr(self._kernels, "handles_overlap", False))
        self.forward_kernel = self._loss_forward if mode == LOSS else self._activation_forward
        self.backward_kernel = self._loss_backward if mode == LOSS else self._activation_backward
        bind = getattr(self._kernels, "activation_kernels", None)
        if mode != LOSS and bind is not None:  # the backend's own cheap kernels (CPU_JIT)
            self.forward_kernel, self.backward_kernel = bind(self._checked_forward, self._checked_backward)

    def _select(self) -> Kernels:
        kernels, self.fallback_reasons = select_backend(
            self.requested_method, self.strict,
            dict(layer=self._layer, dtype=self.dtype.name, params=self._params, device_id=self.device_id))
        return kernels

    # -- public attributes -------------------------------------------------------------
    @property
    def calculation_method(self) -> str:
        """The backend actually in use (after any fallback)."""
        return self._kernels.method

    @property
    def array_module(self) -> Any:
        """The array library of the kernels' arrays.

        Returns
        -------
        module
            ``numpy`` on the CPU backends, ``cupy`` on GPU_CUDA: inputs are made
            with ``comp.array_module.asarray(...)``, whatever backend the fallback
            picked.
        """
        return self._kernels.array_module

    @property
    def n_nodes(self) -> int:
        return self._plan.n_nodes

    @property
    def n_structures(self) -> int:
        """How many distinct compiled functions the layer uses."""
        return len(self._plan.structure_keys)

    @property
    def constants(self) -> List[Dict[str, float]]:
        """Per node, ``{constant name: current value}`` (a copy)."""
        params = self._params  # one snapshot, even while another thread sets constants
        return [
            {name: float(params[node, slot]) for slot, name in enumerate(names)}
            for node, names in enumerate(self._plan.node_slot_names)
        ]

    def set_constants(self, node: int, **values: float) -> None:
        """Change constants of one node; nothing is recompiled.

        Safe from any thread, also while other threads run the kernels: the
        change is atomic (a kernel call sees every value of this call or none).

        Raises
        ------
        IndexError
            ``node`` is not a node of this layer.
        KeyError
            A name is not a constant of that node (the message lists its constants).
        """
        if isinstance(node, bool) or not isinstance(node, numbers.Integral) or not 0 <= node < self.n_nodes:
            raise IndexError(f"node must be an integer in [0, {self.n_nodes}), got {node!r}")
        names = self._plan.node_slot_names[node]
        updates = {}
        for name, value in values.items():
            if name not in names:
                known = ", ".join(names) if names else "none"
                raise KeyError(f"node {node} has no constant '{name}'; its constants are: {known}")
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not _fits_float64(value):
                raise ValueError(f"constant '{name}' must be a finite real number, got {value!r}")
            updates[names.index(name)] = float(value)

        def change(params: np.ndarray) -> None:
            for slot, value in updates.items():
                params[node, slot] = value

        self._change_params(change)

    def _change_params(self, change: Callable[[np.ndarray], None]) -> None:
        """Apply ``change`` to a copy of the constants and hand the copy to the kernels.

        The lock makes the copy-change-swap of concurrent callers serial, so none
        loses another's update; kernel calls take no lock (the backend reads its
        constants once per call, from one attribute).
        """
        with self._params_lock:
            params = self._params.copy()
            change(params)
            params = _frozen(params)
            self._kernels.update_params(params)
            self._params = params

    @property
    def constant_names(self) -> List[Tuple[int, str]]:
        """``(node, name)`` of every constant of the layer, in one fixed flat order.

        Node by node, a node's constants in slot order: the order of
        :attr:`constants_vector`, :meth:`set_constants_vector` and the
        ``constants_grad`` of :attr:`backward_kernel`.
        """
        return list(self._constants_layout.names)

    @property
    def constants_vector(self) -> np.ndarray:
        """Every constant's value, a new 1-D float64 array in :attr:`constant_names` order."""
        return self._constants_layout.vector(self._params)

    def set_constants_vector(self, values: Any) -> None:
        """Set every constant at once (:attr:`constant_names` order); nothing is recompiled.

        Atomic like :meth:`set_constants`: a kernel call on another thread sees all of
        the new values or none.

        Parameters
        ----------
        values : array_like
            ``len(comp.constant_names)`` finite real numbers (a NumPy, CuPy or CPU
            PyTorch vector, or a sequence).

        Raises
        ------
        ValueError
            Wrong length, or a value that is NaN or infinite (naming its node and constant).
        TypeError
            Not a sequence of real numbers.
        """
        checked = self._constants_layout.checked_values(values)
        self._change_params(lambda params: self._constants_layout.write(params, checked))

    def set_gpu_id(self, new_id: int) -> None:
        """Move the kernels to another GPU (only device-specific state is redone)."""
        new_id = _check_device_id(new_id)
        move = getattr(self._kernels, "set_device", None)
        if move is not None:
            move(new_id)
        self.device_id = new_id

    # -- kernels -----------------------------------------------------------------------
    # Each activation kernel first tries a cheap path for the common call (contiguous arrays
    # of the right type, dtype and rows, views included; ``out`` absent, distinct or an input
    # itself): on a 32-node layer the checks would otherwise cost more than the C function.
    # Anything unusual goes through the full checks (``_checked_*``), which also write the
    # error messages. A backend with ``activation_kernels`` (CPU_JIT) binds whole kernels
    # of its own, with these checked paths behind them (one Python call per kernel call).
    def _fast(self, z: Any, out: Any, *grad: Any) -> bool:
        """Whether a nodes-first activation call may skip the full checks (the generic test).

        ``z`` (and ``grad``, when given): contiguous arrays of the right type, dtype and rows, views
        included. ``out``: absent, or the right writeable array that does not overlap the
        inputs in a way the backend would not take. Being an input is fine (rows are
        element-wise); a backend with ``handles_overlap`` finds a partial overlap itself;
        elsewhere arrays that own their memory are the cheap proof of no overlap.
        """
        ndarray, dtype = self._ndarray, self.dtype
        if not (type(z) is ndarray and z.dtype == dtype and z.flags.c_contiguous
                and 0 < z.ndim <= 2 and z.shape[0] == self._n_nodes):
            return False
        for g in grad:
            if not (type(g) is ndarray and g.shape == z.shape and g.dtype == dtype and g.flags.c_contiguous):
                return False
        if out is None:
            return True
        if not (type(out) is ndarray and out.shape == z.shape and out.dtype == dtype):
            return False
        flags = out.flags
        if not (flags.c_contiguous and flags.writeable):
            return False
        return self._handles_overlap or all(out is x or (out.base is None and x.base is None)
                                            for x in (z, *grad))

    def _activation_forward(self, z: Any, out: Any = None, *, features_last: bool = False) -> Any:
        if not features_last and self._fast(z, out):
            if out is None:
                out = self._empty(z.shape, self.dtype)
            if z.size:
                self._kernels.forward(z, None, out)
            return out
        return self._checked_forward(z, out, features_last=features_last)

    def _activation_backward(self, z: Any, grad: Any, out: Any = None, *, constants_grad: Any = None,
                             features_last: bool = False) -> Any:
        if constants_grad is None and not features_last and self._fast(z, out, grad):
            if out is None:
                out = self._empty(z.shape, self.dtype)
            if z.size:
                self._kernels.backward(z, grad, out)
            return out
        return self._checked_backward(z, grad, out, constants_grad=constants_grad, features_last=features_last)

    def _checked_forward(self, z: Any, out: Any = None, *, features_last: bool = False) -> Any:
        z = arrays.as_input(z, "z", self.dtype, self._kernels.array_module)
        return self._call(self._kernels.forward, z, None, out, ("z",), features_last=features_last)

    def _checked_backward(self, z: Any, grad: Any, out: Any = None, *, constants_grad: Any = None,
                          features_last: bool = False) -> Any:
        xp = self._kernels.array_module
        z = arrays.as_input(z, "z", self.dtype, xp)
        grad = arrays.as_input(grad, "grad", self.dtype, xp)
        arrays.same_shape(z, grad, "z", "grad")
        return self._call(self._kernels.backward, z, grad, out, ("z", "grad"), constants_grad, features_last)

    def _loss_forward(self, y_pred: Any, y_true: Any, out: Any = None, *, features_last: bool = False) -> Any:
        return self._loss_call(self._kernels.forward, y_pred, y_true, out, None, features_last)

    def _loss_backward(self, y_pred: Any, y_true: Any, out: Any = None, *, grad: Any = None,
                       constants_grad: Any = None, features_last: bool = False) -> Any:
        return self._loss_call(self._kernels.backward, y_pred, y_true, out, constants_grad, features_last, grad)

    def _loss_call(self, kernel, y_pred: Any, y_true: Any, out: Any, constants_grad: Any,
                   features_last: bool, grad: Any = None) -> Any:
        xp = self._kernels.array_module
        y_pred = arrays.as_input(y_pred, "y_pred", self.dtype, xp)
        y_true = arrays.as_input(y_true, "y_true", self.dtype, xp)
        arrays.same_shape(y_pred, y_true, "y_pred", "y_true")
        if grad is not None:
            # The weights go to the backend beside the inputs, through the one checked path.
            kernel = functools.partial(kernel, grad=self._loss_weights(grad, y_pred, out, xp))
        return self._call(kernel, y_pred, y_true, out, ("y_pred", "y_true"), constants_grad, features_last)

    def _loss_weights(self, grad: Any, y_pred: Any, out: Any, xp: Any) -> Any:
        """``grad`` of a loss backward, checked like ``y_pred`` (a copy where it is not
        C-contiguous, or where it partly overlaps ``out``: kernels write ``out`` as they read it)."""
        grad = arrays.as_input(grad, "grad", self.dtype, xp)
        if grad.shape != y_pred.shape:
            raise ValueError(f"grad has shape {grad.shape}, but y_pred has shape {y_pred.shape}; it must be "
                             f"exactly that shape (one weight per element, no broadcasting): for one weight "
                             f"for all, multiply the result instead, or pass {xp.__name__}.broadcast_to(grad, "
                             f"y_pred.shape)")
        if isinstance(out, xp.ndarray) and arrays.partial_overlap(out, grad, xp):
            grad = grad.copy()
        return grad

    def _call(self, kernel, a: Any, b: Optional[Any], out: Any, names: tuple, constants_grad: Any = None,
              features_last: bool = False) -> Any:
        """The checked path: shapes validated, overlapping ``out`` handled.

        ``features_last``: node ``j`` owns ``a[..., j]`` (PyTorch's layout) instead of row ``j``.
        """
        xp = self._kernels.array_module
        if constants_grad is not None:
            self._constants_layout.check_grad(constants_grad, xp)
        inputs = (a,) if b is None else (a, b)
        out, overlap = arrays.output(out, a.shape, self.dtype, inputs, xp, self._empty)
        if overlap:
            a, b = a.copy(), (None if b is None else b.copy())
        check = arrays.check_features if features_last and not self._elementwise_loss else arrays.check_rows
        for array, name in zip(inputs, names):
            check(array, self.n_nodes, name, self._elementwise_loss)
        # The layout keyword only when it matters: the nodes-first call stays the plain one.
        layout = {"features_last": True} if features_last and not self._elementwise_loss else {}
        if constants_grad is None:
            if a.size:
                kernel(a, b, out, **layout)
        elif a.size:
            kernel(a, b, out, constants_grad, **layout)
        else:
            constants_grad[...] = 0  # a sum over an empty batch
        return out

    # -- pickling ----------------------------------------------------------------------
    def __reduce__(self):
        options = dict(dtype=self.dtype.name, strict=self.strict)
        state = {"params": self._params.copy()}
        return (_rebuild, (self.configs, self.requested_method, self.device_id, self.mode, options), state)

    def __setstate__(self, state: Dict[str, Any]) -> None:
        def change(params: np.ndarray) -> None:
            params[...] = state["params"]

        self._change_params(change)

    def __repr__(self) -> str:
        return (f"SymbolicJITCompiler({self.n_nodes} nodes, {self.n_structures} structures, mode={self.mode!r}, "
                f"dtype={self.dtype.name!r}, calculation_method={self.calculation_method!r})")


def _frozen(params: np.ndarray) -> np.ndarray:
    """``params`` made read-only: the kernels may be reading it on other threads."""
    params.flags.writeable = False
    return params


def _rebuild(configs, method, device_id, mode, options) -> SymbolicJITCompiler:
    return SymbolicJITCompiler(configs, method, device_id, mode, **options)
