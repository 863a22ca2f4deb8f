"""CPU_JIT: generated C row functions driven by an OpenMP runtime, called through cffi.

Each node gets a pointer to its structure's row function; one call of the
runtime's driver runs every row (and chunks of long rows) in parallel, or
serially when the work is too small for threads to pay. Pointers to the
function tables and constants are prepared once, so a call costs little more
than the C function itself.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from ..cache import default_cache
from ..config import settings
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
        self._loss = plan.mode == "loss"
        self._pointer = _CTYPES[dtype]
        self._threads = int(settings().num_threads)
        fn_type = runtime_source.row_fn_type
        n = self._rows = plan.n_nodes
        self._forward_table = ffi.new(f"{fn_type}[]", n)
        self._backward_table = ffi.new(f"{fn_type}[]", n)
        for node, index in enumerate(plan.node_structure):
            functions = rows[plan.structure_keys[index]]
            self._forward_table[node] = _foreign_function(ffi, fn_type, functions.module, functions.forward)
            self._backward_table[node] = _foreign_function(ffi, fn_type, functions.module, functions.backward)
        self._modules = {id(f.module): f.module for f in rows.values()}  # keep them alive
        self.update_params(params)

    def update_params(self, params: np.ndarray) -> None:
        # The compiler updates this array in place; the pointer stays valid while we hold it.
        self._params = np.ascontiguousarray(params, dtype=np.float64)
        self._params_pointer = self._ffi.from_buffer("double[]", self._params)
        self._stride = self._params.shape[1]

    def forward(self, a: np.ndarray, b: Optional[np.ndarray], out: np.ndarray) -> None:
        ffi = self._ffi
        second = ffi.from_buffer(self._pointer, b) if self._loss else ffi.NULL
        self._run(self._forward_table, self._rows, a.size // self._rows, ffi.from_buffer(self._pointer, a), second,
                  ffi.NULL, ffi.from_buffer(self._pointer, out), self._params_pointer, self._stride, self._threads)

    def backward(self, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
        ffi = self._ffi
        other = ffi.from_buffer(self._pointer, b)
        loss_input, gradient = (other, ffi.NULL) if self._loss else (ffi.NULL, other)
        self._run(self._backward_table, self._rows, a.size // self._rows, ffi.from_buffer(self._pointer, a), loss_input,
                  gradient, ffi.from_buffer(self._pointer, out), self._params_pointer, self._stride, self._threads)


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
