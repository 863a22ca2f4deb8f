"""CPU_JIT: generated C row functions driven by an OpenMP runtime, called through cffi.

Each node gets a pointer to its structure's row function; one call of the
runtime's driver runs every row (and chunks of long rows) in parallel, or
serially when the work is too small for threads to pay. Pointers to the
function tables and constants are prepared once, so a call costs little more
than the C function itself. The constants' gradient (a third function table,
``hs_run_cgrad_*``) and the features-last layout (``hs_run_fl_*``) are other
entries of the same driver; the plain nodes-first calls stay as short as before.
The constants-gradient functions are found or built on the first call asking for
them (inference and neuroevolution never pay for them). A loss weighted by its
upstream gradient (``grad``) passes it as the row functions' ``g``, which a loss's
backward functions multiply by when it is not NULL.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from ..cache import default_cache
from ..config import settings
from ..errors import FormulaParsingError
from ..symbolic.plan import LayerPlan
from .base import CPU_JIT
from .cpu_jit_calls import bind_kernels
from .cpu_modules import ConstantsGradFunction, RowFunctions, build_module, ensure_constants_grad, ensure_structures

_CTYPES = {"float32": "float *", "float64": "double *"}
#: The driver's status for a partial overlap of ``out`` and an input: ``c_runtime.OVERLAP``,
#: not imported from there because the warm path never imports the code generator.
OVERLAP = -2


class CffiKernels:
    """Kernels of one layer on CPU_JIT."""

    method = CPU_JIT
    array_module = np
    #: ``out`` may overlap the inputs: the driver finds a partial overlap from the pointers
    #: and the call is run again on copies of the inputs (in place runs as it is).
    handles_overlap = True

    def __init__(self, plan: LayerPlan, rows: Dict[str, RowFunctions], runtime: Any, runtime_source: Any,
                 dtype: str, params: np.ndarray,
                 constants_grad_for: Optional[Callable[[Any], Dict[str, ConstantsGradFunction]]] = None):
        self._ffi = ffi = runtime.ffi
        self._run = getattr(runtime.lib, runtime_source.run_name)
        self._run_cgrad = getattr(runtime.lib, runtime_source.cgrad_name)
        self._run_features_last = getattr(runtime.lib, runtime_source.features_last_name)
        self._loss = plan.mode == "loss"
        self._pointer = ffi.typeof(_CTYPES[dtype])  # resolved once: a string costs ~40 ns per use
        self._threads = int(settings().num_threads)
        fn_type = runtime_source.row_fn_type
        n = self._rows = plan.n_nodes
        # One address lookup per structure, not per node (a 1024-node layer has a few structures).
        functions = [rows[key] for key in plan.structure_keys]
        self._forward_table = _function_table(ffi, fn_type, [f.forward_address for f in functions],
                                              plan.node_structure)
        self._backward_table = _function_table(ffi, fn_type, [f.backward_address for f in functions],
                                               plan.node_structure)
        # Built on the first call with constants_grad: (table, problem, modules), one attribute store.
        self._plan, self._cgrad_fn_type, self._constants_grad_for = plan, runtime_source.cgrad_fn_type, constants_grad_for
        self._cgrad: Optional[Tuple[Any, Optional[str], Any]] = None
        self._cgrad_lock = threading.Lock()
        self._offsets = plan.constant_offsets()
        self._offsets_pointer = ffi.from_buffer("int64_t[]", self._offsets)
        self._modules = {id(f.module): f.module for f in rows.values()}  # keep them alive
        # hs_call_* (codegen.c_calls) and its layer record; ``order`` lists the rows sorted by
        # structure (a stable sort: the driver gathers neighbours that share a function), or
        # is NULL when no two rows share one.
        tag = runtime_source.run_name.rsplit("_", 1)[1]
        self._call = getattr(runtime.lib, f"hs_call_{tag}")
        self._layer_type = ffi.typeof(f"hs_layer_{tag} *")
        self._order = np.argsort(np.asarray(plan.node_structure, dtype=np.int64), kind="stable").astype(np.int64)
        self._order_pointer = ffi.from_buffer("int64_t[]", self._order) \
            if len(plan.structure_keys) < n else ffi.NULL
        self._dtype = dtype
        self.update_params(params)

    def activation_kernels(self, checked_forward: Callable[..., Any],
                           checked_backward: Callable[..., Any]) -> Tuple[Callable[..., Any], Callable[..., Any]]:
        """``forward_kernel``/``backward_kernel`` of an activation layer with the cheap calls bound
        in (:mod:`.cpu_jit_calls`); ``checked_*``: the compiler's checked paths, for the rest."""
        return bind_kernels(self, self._dtype, checked_forward, checked_backward)

    def _constants_grad_table(self) -> Tuple[Any, Optional[str], Any]:
        """(cgrad table, problem or None, modules kept alive), found or built on first use."""
        with self._cgrad_lock:
            if self._cgrad is not None:
                return self._cgrad
            plan, ffi = self._plan, self._ffi
            keys = [key for key, slots in zip(plan.structure_keys, plan.structure_slots) if slots]
            functions = self._constants_grad_for(keys) if keys and self._constants_grad_for else {}
            # Per structure: its function's address, or 0 (NULL: no constants, or none could be made).
            addresses, missing = [], {}
            for index, (key, slots) in enumerate(zip(plan.structure_keys, plan.structure_slots)):
                function = functions.get(key) if slots else None
                addresses.append(function.address if function is not None and function.name else 0)
                if slots and not addresses[-1]:
                    missing[index] = (function.problem if function is not None else None) or \
                        "its constants-gradient function was not built"
            table = _function_table(ffi, self._cgrad_fn_type, addresses, plan.node_structure)
            problem: Optional[str] = None
            if missing:
                node = next(node for node, index in enumerate(plan.node_structure) if index in missing)
                problem = f"node {node}: {missing[plan.node_structure[node]]}"
            modules = {id(f.module): f.module for f in functions.values() if f.module is not None}
            self._cgrad = state = (table, problem, modules)
            return state

    def update_params(self, params: np.ndarray) -> None:
        # The compiler never writes ``params`` after this (it swaps in a new array instead).
        # Pointer, stride and the array the pointer keeps alive are one tuple set in one
        # store, read once per call: a call on another thread uses one whole set, old or new.
        params = np.ascontiguousarray(params, dtype=np.float64)
        pointer = self._ffi.from_buffer("double[]", params)
        # The layer records of hs_call_* (forward, backward) point at these constants: one
        # tuple that also keeps what they point at alive, read once per call like _constants.
        self._layers = tuple(
            self._ffi.new(self._layer_type, {"fns": table, "order": self._order_pointer, "rows": self._rows,
                                             "params": pointer, "p_stride": params.shape[1],
                                             "nthreads": self._threads})
            for table in (self._forward_table, self._backward_table)) + (pointer, params)
        self._constants = (pointer, params.shape[1], params)

    # A call keeps no state on ``self``: any number of threads may run kernels at once
    # (cffi releases the GIL; each call's OpenMP region is its own).
    def forward(self, a: np.ndarray, b: Optional[np.ndarray], out: np.ndarray, features_last: bool = False) -> None:
        params_ptr, stride, _ = self._constants
        ffi = self._ffi
        second = ffi.from_buffer(self._pointer, b) if self._loss else ffi.NULL
        if features_last:
            status = self._run_features_last(
                self._forward_table, ffi.NULL, self._rows, a.size // self._rows, ffi.from_buffer(self._pointer, a),
                second, ffi.NULL, ffi.from_buffer(self._pointer, out), params_ptr, stride, ffi.NULL, ffi.NULL,
                self._threads)
        else:
            status = self._run(self._forward_table, self._rows, a.size // self._rows, ffi.from_buffer(self._pointer, a),
                               second, ffi.NULL, ffi.from_buffer(self._pointer, out), params_ptr, stride,
                               self._threads)
        if status:
            if status != OVERLAP:
                _check(status)
            self.forward(a.copy(), None if b is None else b.copy(), out, features_last)

    def backward(self, a: np.ndarray, b: np.ndarray, out: np.ndarray, constants_grad: Optional[np.ndarray] = None,
                 features_last: bool = False, grad: Optional[np.ndarray] = None) -> None:
        params_ptr, stride, _ = self._constants
        ffi = self._ffi
        other = ffi.from_buffer(self._pointer, b)
        loss_input, gradient = (other, ffi.NULL) if self._loss else (ffi.NULL, other)
        if grad is not None:  # a loss weighted by the upstream gradient: its row functions read g
            gradient = ffi.from_buffer(self._pointer, grad)
        if constants_grad is None and not features_last:
            status = self._run(self._backward_table, self._rows, a.size // self._rows,
                               ffi.from_buffer(self._pointer, a), loss_input, gradient,
                               ffi.from_buffer(self._pointer, out), params_ptr, stride, self._threads)
        else:
            cg_table, offsets, cgrad = ffi.NULL, ffi.NULL, ffi.NULL
            if constants_grad is not None:
                state = self._cgrad  # one read; None until the first such call built it
                if state is None:
                    state = self._constants_grad_table()
                if state[1] is not None:
                    raise FormulaParsingError(f"the constants' gradient cannot be computed: {state[1]}")
                cg_table, offsets = state[0], self._offsets_pointer
                cgrad = ffi.from_buffer("double[]", constants_grad)
            run = self._run_features_last if features_last else self._run_cgrad
            status = run(self._backward_table, cg_table, self._rows, a.size // self._rows,
                         ffi.from_buffer(self._pointer, a), loss_input, gradient, ffi.from_buffer(self._pointer, out),
                         params_ptr, stride, offsets, cgrad, self._threads)
        if status:
            if status != OVERLAP:
                _check(status)
            self.backward(a.copy(), b.copy(), out, constants_grad, features_last,
                          None if grad is None else grad.copy())


def _check(status: int) -> None:
    if status == -1:
        raise MemoryError("CPU_JIT could not allocate the scratch memory of a kernel call "
                          "(one double per constant and span of samples)")


def _function_table(ffi: Any, fn_type: str, addresses: Any, node_structure: Any) -> Any:
    """A new ``fn_type[]`` whose entry ``r`` is ``addresses[node_structure[r]]``: filled with one
    copy of an address array, not one cast and store per node."""
    per_node = np.asarray(addresses, dtype=np.uintp)[np.asarray(node_structure, dtype=np.intp)]
    table = ffi.new(f"{fn_type}[]", len(per_node))
    ffi.memmove(table, per_node, per_node.nbytes)
    return table


def build(layer: Any, dtype: str, params: np.ndarray, device_id: int = 0) -> CffiKernels:
    """Backend entry point: find or build every function of the layer, then wire the kernels."""
    from ..codegen.c_runtime import render_runtime
    from ..toolchains.persisted import find_toolchain_persisted

    cache = default_cache()
    toolchain = find_toolchain_persisted(cache)
    runtime_source = render_runtime(dtype)
    runtime = build_module(cache, "c-runtime", "_hsnn_runtime", runtime_source.source, runtime_source.cdef,
                           toolchain, dtype, functions=0)
    plan = layer.plan
    rows = ensure_structures(cache, plan.structure_keys, toolchain, dtype, layer.structures_for)

    def constants_grad_for(keys):
        return ensure_constants_grad(cache, keys, toolchain, dtype, layer.structures_for)

    return CffiKernels(plan, rows, runtime, runtime_source, dtype, params, constants_grad_for)
