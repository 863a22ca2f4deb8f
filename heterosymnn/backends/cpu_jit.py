"""CPU_JIT: generated C row functions driven by an OpenMP runtime, called through cffi.

Each node gets a pointer to its structure's row function; one call of the
runtime's driver runs every row (and chunks of long rows) in parallel, or
serially when the work is too small for threads to pay. Pointers to the
function tables and constants are prepared once, so a call costs little more
than the C function itself. The constants' gradient (a third function table,
``hs_run_cgrad_*``) and the features-last layout (``hs_run_fl_*``) are other
entries of the same driver; the plain nodes-first calls stay as short as before.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from ..cache import default_cache
from ..config import settings
from ..errors import FormulaParsingError
from ..symbolic.plan import LayerPlan
from .base import CPU_JIT
from .cpu_modules import RowFunctions, build_module, ensure_structures

_CTYPES = {"float32": "float *", "float64": "double *"}


class CffiKernels:
    """Kernels of one layer on CPU_JIT."""

    method = CPU_JIT
    array_module = np

    def __init__(self, plan: LayerPlan, rows: Dict[str, RowFunctions], runtime: Any, runtime_source: Any,
                 dtype: str, params: np.ndarray):
        self._ffi = ffi = runtime.ffi
        self._run = getattr(runtime.lib, runtime_source.run_name)
        self._run_cgrad = getattr(runtime.lib, runtime_source.cgrad_name)
        self._run_features_last = getattr(runtime.lib, runtime_source.features_last_name)
        self._loss = plan.mode == "loss"
        self._pointer = _CTYPES[dtype]
        self._threads = int(settings().num_threads)
        fn_type = runtime_source.row_fn_type
        n = self._rows = plan.n_nodes
        self._forward_table = ffi.new(f"{fn_type}[]", n)
        self._backward_table = ffi.new(f"{fn_type}[]", n)
        self._cgrad_table = ffi.new(f"{runtime_source.cgrad_fn_type}[]", n)  # NULL: a node without constants
        self._cgrad_problem: Optional[str] = None
        for node, index in enumerate(plan.node_structure):
            functions = rows[plan.structure_keys[index]]
            self._forward_table[node] = _foreign_function(ffi, fn_type, functions.module, functions.forward)
            self._backward_table[node] = _foreign_function(ffi, fn_type, functions.module, functions.backward)
            if functions.constants_grad:
                self._cgrad_table[node] = _foreign_function(ffi, runtime_source.cgrad_fn_type, functions.module,
                                                            functions.constants_grad)
            elif plan.structure_slots[index] and self._cgrad_problem is None:
                why = functions.constants_grad_problem or "its constants-gradient function was not built"
                self._cgrad_problem = f"node {node}: {why}"
        self._offsets = plan.constant_offsets()
        self._offsets_pointer = ffi.from_buffer("int64_t[]", self._offsets)
        self._modules = {id(f.module): f.module for f in rows.values()}  # keep them alive
        self.update_params(params)

    def update_params(self, params: np.ndarray) -> None:
        # The compiler never writes ``params`` after this (it swaps in a new array instead).
        # Pointer, stride and the array the pointer keeps alive are one tuple set in one
        # store, read once per call: a call on another thread uses one whole set, old or new.
        params = np.ascontiguousarray(params, dtype=np.float64)
        self._constants = (self._ffi.from_buffer("double[]", params), params.shape[1], params)

    # A call keeps no state on ``self``: any number of threads may run kernels at once
    # (cffi releases the GIL; each call's OpenMP region is its own).
    def forward(self, a: np.ndarray, b: Optional[np.ndarray], out: np.ndarray, features_last: bool = False) -> None:
        params_ptr, stride, _ = self._constants
        ffi = self._ffi
        second = ffi.from_buffer(self._pointer, b) if self._loss else ffi.NULL
        if features_last:
            _check(self._run_features_last(
                self._forward_table, ffi.NULL, self._rows, a.size // self._rows, ffi.from_buffer(self._pointer, a),
                second, ffi.NULL, ffi.from_buffer(self._pointer, out), params_ptr, stride, ffi.NULL, ffi.NULL,
                self._threads))
            return
        self._run(self._forward_table, self._rows, a.size // self._rows, ffi.from_buffer(self._pointer, a), second,
                  ffi.NULL, ffi.from_buffer(self._pointer, out), params_ptr, stride, self._threads)

    def backward(self, a: np.ndarray, b: np.ndarray, out: np.ndarray, constants_grad: Optional[np.ndarray] = None,
                 features_last: bool = False) -> None:
        params_ptr, stride, _ = self._constants
        ffi = self._ffi
        other = ffi.from_buffer(self._pointer, b)
        loss_input, gradient = (other, ffi.NULL) if self._loss else (ffi.NULL, other)
        if constants_grad is None and not features_last:
            self._run(self._backward_table, self._rows, a.size // self._rows, ffi.from_buffer(self._pointer, a),
                      loss_input, gradient, ffi.from_buffer(self._pointer, out), params_ptr, stride, self._threads)
            return
        cg_table, offsets, cgrad = ffi.NULL, ffi.NULL, ffi.NULL
        if constants_grad is not None:
            if self._cgrad_problem is not None:
                raise FormulaParsingError(f"the constants' gradient cannot be computed: {self._cgrad_problem}")
            cg_table, offsets = self._cgrad_table, self._offsets_pointer
            cgrad = ffi.from_buffer("double[]", constants_grad)
        run = self._run_features_last if features_last else self._run_cgrad
        _check(run(self._backward_table, cg_table, self._rows, a.size // self._rows, ffi.from_buffer(self._pointer, a),
                   loss_input, gradient, ffi.from_buffer(self._pointer, out), params_ptr, stride, offsets, cgrad,
                   self._threads))


def _check(status: int) -> None:
    if status != 0:
        raise MemoryError("CPU_JIT could not allocate the scratch memory of a kernel call "
                          "(one double per constant and span of samples)")


def _foreign_function(ffi: Any, fn_type: str, module: Any, name: str) -> Any:
    """A row function of another cffi module as a pointer of the runtime's typedef."""
    address = module.ffi.cast("uintptr_t", module.ffi.addressof(module.lib, name))
    return ffi.cast(fn_type, int(address))


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
    return CffiKernels(plan, rows, runtime, runtime_source, dtype, params)
