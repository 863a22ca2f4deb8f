"""What HeteroActivation and HeteroLoss share: the constants as tensors, input checks, pickling, repr.

The constants are one vector in ``constant_names`` order. ``trainable=True``: an
``nn.Parameter`` named ``constants``; ``False``: a buffer of that name; a set of
names: ``constants`` is a Parameter of just those entries (in ``constant_names``
order, listed by ``trainable_names``) and the rest is a buffer,
``frozen_constants``, so an optimizer (weight decay included) never moves a
frozen constant. Either way the tensors have the layer's dtype, follow
``.to()``/``.double()``, and are what ``state_dict`` saves.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from ..backends.base import CPU_JIT, CPU_PYTHON, GPU_CUDA
from ._kernels import LayerKernels

Trainable = Union[bool, Iterable[Union[str, Tuple[int, str]]]]
_DTYPE_NAMES = {"float32": torch.float32, "float64": torch.float64}


class HeteroModule(nn.Module):
    """Base of the heterosymnn layers (not used directly)."""

    def __init__(self, configs: Sequence[Any], mode: str, trainable: Trainable, method: str,
                 dtype: Optional[torch.dtype], strict: bool):
        super().__init__()
        dtype = _torch_dtype(dtype)
        kernels = LayerKernels(configs, mode, method, strict, dtype)
        self.configs = kernels.configs
        self.mode, self.method, self.strict = mode, kernels.method, kernels.strict
        self._attach(kernels)
        mask = _trainable_mask(trainable, kernels.constant_names)
        self.trainable_names: List[Tuple[int, str]] = [n for n, m in zip(kernels.constant_names, mask) if m]
        values = torch.tensor(kernels.initial_constants, dtype=dtype)
        self._split = bool(mask.any() and not mask.all())
        if self._split:
            self.constants = nn.Parameter(values[torch.from_numpy(mask)])
            self.register_buffer("frozen_constants", values[torch.from_numpy(~mask)])
            order = np.empty(mask.size, dtype=np.int64)  # position of each constant in cat(constants, frozen)
            order[mask] = np.arange(mask.sum())
            order[~mask] = mask.sum() + np.arange((~mask).sum())
            self.register_buffer("_order", torch.from_numpy(order), persistent=False)
        elif mask.size and mask.all():
            self.constants = nn.Parameter(values)
        else:
            self.register_buffer("constants", values)

    def _attach(self, kernels: LayerKernels) -> None:
        self._kernels = kernels
        self._layer_id = kernels.layer_id  # the operators' handle on the compilers
        self.n_nodes = kernels.n_nodes
        self.constant_names: List[Tuple[int, str]] = list(kernels.constant_names)

    # -- constants -------------------------------------------------------------------
    def all_constants(self) -> torch.Tensor:
        """Every constant in ``constant_names`` order (differentiable w.r.t. the trainable ones)."""
        if self._split:
            return torch.cat((self.constants, self.frozen_constants)).index_select(0, self._order)
        return self.constants

    def node_constants(self) -> List[Dict[str, float]]:
        """Per node, ``{constant name: current value}`` (like ``SymbolicJITCompiler.constants``)."""
        values = self.all_constants().detach().to("cpu", torch.float64).tolist()
        result: List[Dict[str, float]] = [{} for _ in range(self.n_nodes)]
        for (node, name), value in zip(self.constant_names, values):
            result[node][name] = value
        return result

    @torch.no_grad()
    def set_constants(self, node: int, **values: float) -> None:
        """Set constants of node ``node`` in place (trainable or frozen); nothing is recompiled."""
        for name, value in values.items():
            if (node, name) not in self.constant_names:
                known = ", ".join(n for j, n in self.constant_names if j == node) or "none"
                raise KeyError(f"node {node} has no constant '{name}'; its constants are: {known}")
            index = self.constant_names.index((node, name))
            if not self._split:
                self.constants[index] = value
            elif (node, name) in self.trainable_names:
                self.constants[self.trainable_names.index((node, name))] = value
            else:
                self.frozen_constants[int(self._order[index]) - len(self.trainable_names)] = value

    @property
    def calculation_method(self) -> str:
        """The backend the layer runs on at its current dtype and device (after any fallback)."""
        return self._kernels.entry(self.constants.dtype, self.constants.device).comp.calculation_method

    # -- checks (plain Python on shapes, dtypes, devices: traced away by torch.compile) -----
    def _check(self, name: str, tensor: Any, last: Optional[int]) -> None:
        dtype, device = self.constants.dtype, self.constants.device
        if (isinstance(tensor, torch.Tensor) and tensor.dtype == dtype and tensor.device == device
                and (last is None or (tensor.dim() > 0 and tensor.shape[-1] == last))
                and dtype in (torch.float32, torch.float64)):
            return  # the usual call; a CUDA tensor on a CPU-only layer is refused by the operator
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__module__}.{type(tensor).__name__}")
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"the layer's constants are {dtype}; heterosymnn kernels run in float32 or float64: "
                            f"convert the layer with layer.float() or layer.double()")
        if tensor.dtype != dtype:
            raise TypeError(f"{name} has dtype {tensor.dtype}, but the layer is {dtype}: convert the input with "
                            f"{name}.to({dtype}), or the layer with layer.to({tensor.dtype})"
                            if tensor.dtype in (torch.float32, torch.float64) else
                            f"{name} has dtype {tensor.dtype}, but the layer is {dtype}: convert the input with "
                            f"{name}.to({dtype})")
        if tensor.device.type == "cuda" and self.method in (CPU_JIT, CPU_PYTHON):
            raise ValueError(f"{name} is a CUDA tensor, but this layer was built with method='{self.method}', "
                             f"which runs on the CPU: build it with method='AUTO' (or 'GPU_CUDA'), or move the "
                             f"input with {name}.cpu()")
        if tensor.device.type == "cpu" and self.method == GPU_CUDA:
            raise ValueError(f"{name} is a CPU tensor, but this layer was built with method='GPU_CUDA': move the "
                             f"layer and the input to CUDA (.cuda()), or build the layer with method='AUTO'")
        if tensor.device != device:
            raise ValueError(f"{name} is on {tensor.device}, but the layer is on {device}: move the layer with "
                             f"layer.to({name}.device)")
        if last is not None and (tensor.dim() == 0 or tensor.shape[-1] != last):
            got = "a 0-d tensor" if tensor.dim() == 0 else f"shape {tuple(tensor.shape)}"
            raise ValueError(f"expected the last dimension of {name} to be {last} (one feature per node, shape "
                             f"(..., {last})), got {got}")

    # -- pickling, deepcopy, torch.save: the compilers are rebuilt from the configs -----
    def __getstate__(self) -> Dict[str, Any]:
        state = super().__getstate__()
        state.pop("_kernels", None)
        state.pop("_layer_id", None)
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        super().__setstate__(state)
        dtype = state["_buffers"].get("constants")
        if dtype is None:
            dtype = state["_parameters"]["constants"]
        dtype = dtype.dtype if dtype.dtype in (torch.float32, torch.float64) else torch.float32
        self._attach(LayerKernels(self.configs, self.mode, self.method, self.strict, dtype))

    # -- repr ------------------------------------------------------------------------
    def extra_repr(self) -> str:
        if not self.constant_names:
            trainable = "no constants"
        elif len(self.trainable_names) == len(self.constant_names):
            trainable = "trainable=True"
        elif not self.trainable_names:
            trainable = "trainable=False"
        else:
            trainable = f"trainable={sorted({name for _, name in self.trainable_names})}"
        return (f"{_formulas_text(self.configs)}, method={self.method!r}, dtype={self.constants.dtype}, "
                f"{trainable}")


def _torch_dtype(dtype: Any) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str) and dtype in _DTYPE_NAMES:
        return _DTYPE_NAMES[dtype]
    if dtype in (torch.float32, torch.float64):
        return dtype
    raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")


def _trainable_mask(trainable: Trainable, names: Sequence[Tuple[int, str]]) -> np.ndarray:
    if isinstance(trainable, bool):
        return np.full(len(names), trainable, dtype=bool)
    if isinstance(trainable, str):
        trainable = {trainable}
    try:
        wanted = set(trainable)
    except TypeError:
        raise TypeError(f"trainable must be True, False or a set of constant names (or (node, name) pairs), "
                        f"got {trainable!r}") from None
    known = {name for _, name in names}
    unknown = [w for w in wanted if (w not in known if isinstance(w, str) else tuple(w) not in names)]
    if unknown:
        raise ValueError(f"trainable names {sorted(map(str, unknown))} are not constants of this layer; "
                         f"its constants are: {', '.join(sorted(known)) or 'none'}")
    pairs = {tuple(w) for w in wanted if not isinstance(w, str)}
    return np.array([name in wanted or (node, name) in pairs for node, name in names], dtype=bool)


def _formula(config: Any) -> str:
    return config if isinstance(config, str) else str(config[0]) if isinstance(config, (tuple, list)) else repr(config)


def _formulas_text(configs: Sequence[Any], listed: int = 6, width: int = 40) -> str:
    texts = [_formula(c) for c in configs]
    short = [t if len(t) <= width else t[:width - 3] + "..." for t in texts]
    if len(short) <= listed:
        return f"formulas={short}"
    counts = Counter(short).most_common()
    shown = ", ".join(f"{text!r} x{count}" for text, count in counts[:listed])
    more = f", +{len(counts) - listed} more formulas" if len(counts) > listed else ""
    return f"{len(short)} nodes: {shown}{more}"
