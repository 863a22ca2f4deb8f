"""The compilers behind one layer, found by an integer id (custom operators take no objects).

A layer owns one :class:`LayerKernels`; the operators look it up by
``layer_id`` in a weak registry, so a deleted layer frees its compilers. One
compiler per (dtype, device type) is built on first use, from the kernel cache:
``.double()`` or ``.cuda()`` on the layer costs one warm compiler construction,
never a C build of functions already built; another GPU reuses the CUDA compiler
through ``set_gpu_id``. The constants live in the layer's tensor: they are handed
to a compiler before each call, and only when they changed. So threads may share a layer
(one set of constants), but not call it at the same time with different constants tensors
(``torch.func.functional_call``): each call would hand its own set to the same compiler.
"""
from __future__ import annotations

import itertools
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..backends.base import AUTO, CPU_JIT, CPU_PYTHON, GPU_CUDA
from ..jit.compiler import SymbolicJITCompiler
from ..jit.selection import normalize_method

_REGISTRY: "weakref.WeakValueDictionary[int, LayerKernels]" = weakref.WeakValueDictionary()
_IDS = itertools.count(1)
_DTYPES = {torch.float32: "float32", torch.float64: "float64"}


def lookup(layer_id: int) -> "LayerKernels":
    """The kernels of layer ``layer_id``, or a clear error if that layer no longer exists."""
    kernels = _REGISTRY.get(int(layer_id))
    if kernels is None:
        raise RuntimeError(f"heterosymnn layer {layer_id} no longer exists: a compiled graph or an autograd "
                           f"graph outlived the HeteroActivation/HeteroLoss it was made from; keep the layer alive")
    return kernels


def dtype_name(dtype: torch.dtype) -> str:
    name = _DTYPES.get(dtype)
    if name is None:
        raise TypeError(f"heterosymnn kernels take float32 or float64 tensors, got {dtype}; convert the input "
                        f"and the layer with .float() or .double()")
    return name


@dataclass
class Entry:
    """One compiler and the constants it holds."""
    comp: SymbolicJITCompiler
    synced: Optional[torch.Tensor] = None  # the constants it holds, as last handed over


class LayerKernels:
    """Compilers of one layer's configs, built lazily per (dtype, device type)."""

    def __init__(self, configs: Sequence[Any], mode: str, method: str, strict: bool, dtype: torch.dtype):
        self.configs = list(configs)
        self.mode = mode
        self.method = normalize_method(method)
        self.strict = bool(strict)
        self._entries: Dict[Tuple[str, str], Entry] = {}
        self._lock = threading.RLock()
        # The first compiler validates the formulas now (a FormulaParsingError at construction).
        first = self._build(dtype_name(dtype), "cuda" if self.method == GPU_CUDA else "cpu", 0).comp
        self.n_nodes: int = first.n_nodes
        self.constant_names: List[Tuple[int, str]] = first.constant_names
        self.initial_constants: np.ndarray = first.constants_vector
        self.elementwise = mode == "loss" and first.n_nodes == 1
        self.layer_id = next(_IDS)
        _REGISTRY[self.layer_id] = self

    # -- compilers -------------------------------------------------------------------
    def entry(self, dtype: torch.dtype, device: torch.device) -> Entry:
        """The compiler for tensors of ``dtype`` on ``device`` (built on first use)."""
        kind = device.type
        if kind == "cuda" and self.method in (CPU_JIT, CPU_PYTHON):
            raise ValueError(f"got a CUDA tensor, but this layer was built with method='{self.method}', which runs "
                             f"on the CPU: build it with method='AUTO' (or 'GPU_CUDA'), or move the input to the CPU")
        if kind == "cpu" and self.method == GPU_CUDA:
            raise ValueError("got a CPU tensor, but this layer was built with method='GPU_CUDA': move the layer and "
                             "its input to a CUDA device (.cuda()), or build it with method='AUTO'")
        if kind not in ("cpu", "cuda"):
            raise ValueError(f"heterosymnn kernels run on CPU and CUDA tensors, got a tensor on {device}")
        index = 0 if kind == "cpu" else (device.index if device.index is not None else torch.cuda.current_device())
        key = (dtype_name(dtype), kind)
        found = self._entries.get(key)
        if found is None:
            with self._lock:
                found = self._entries.get(key) or self._build(key[0], kind, index)
        if kind == "cuda" and found.comp.device_id != index:
            with self._lock:
                found.comp.set_gpu_id(index)  # loads the module there; nothing is re-parsed
                found.synced = None
        return found

    def _build(self, dtype: str, kind: str, device_index: int) -> Entry:
        if kind == "cuda":  # a CUDA tensor cannot fall back to a CPU backend
            method, strict = GPU_CUDA, True
        else:
            method, strict = (CPU_JIT if self.method in (AUTO, GPU_CUDA) else self.method), self.strict
        # Every backend takes features_last and constants_grad; nothing is probed here, so a layer
        # whose constants are frozen never derives or compiles their gradient functions.
        entry = Entry(SymbolicJITCompiler(self.configs, method, device_index, self.mode, dtype=dtype, strict=strict))
        self._entries[(dtype, kind)] = entry
        return entry

    # -- constants -------------------------------------------------------------------
    def sync(self, entry: Entry, constants: torch.Tensor) -> None:
        """Hand ``constants`` (the layer's current values) to ``entry``'s compiler if they changed.

        Compared by value with what was handed over last (not by version counter, which
        ``param.data.copy_(...)`` would bypass); a change costs one ``set_constants_vector``.
        """
        if not self.constant_names:
            return
        constants = constants.detach()
        last = entry.synced
        if (last is not None and last.dtype == constants.dtype and last.device == constants.device
                and torch.equal(last, constants)):
            return
        entry.comp.set_constants_vector(constants.to(device="cpu", dtype=torch.float64).numpy())
        entry.synced = constants.clone()
