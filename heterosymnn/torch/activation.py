"""HeteroActivation: one formula per feature, as a trainable PyTorch layer."""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from . import ops
from ._module import HeteroModule, Trainable


class HeteroActivation(HeteroModule):
    """Apply node ``j``'s formula to feature ``j`` of an input of shape ``(..., n_nodes)``.

    Parameters
    ----------
    configs : list
        One node config per feature, as for :class:`heterosymnn.SymbolicJITCompiler`:
        a formula string (``"relu"``, ``"tanh(num)"``) or a ``(formula, constants)``
        pair (``("a*sin(w*num)", {"a": 1.0, "w": 30.0})``).
    trainable : bool or set of str
        ``True``: every constant (named formulas' defaults included, e.g.
        ``leaky_relu``'s ``alpha``) is an entry of the ``nn.Parameter``
        ``constants``, in :attr:`constant_names` order. ``False``: ``constants``
        is a buffer. A set of names (``{"w"}``, or ``(node, name)`` pairs): only
        those learn; ``constants`` holds them (:attr:`trainable_names` order) and
        the buffer ``frozen_constants`` the others.
    method : {"AUTO", "CPU_JIT", "CPU_PYTHON", "GPU_CUDA"}
        ``AUTO``: CPU tensors run on CPU_JIT (falling back to CPU_PYTHON with a
        ``PerformanceWarning``), CUDA tensors on GPU_CUDA. ``CPU_JIT`` /
        ``CPU_PYTHON``: CPU tensors only; ``GPU_CUDA``: CUDA tensors only.
    dtype : torch.dtype, optional
        ``torch.float32`` (default) or ``torch.float64``: the constants' dtype and
        the input's. ``.double()``, ``.float()`` and ``.to(dtype)`` switch it
        (the kernels for the new dtype come from the cache).
    strict : bool
        Raise instead of falling back to a slower backend.

    Attributes
    ----------
    constants : torch.Tensor
        The constants (a Parameter, or a buffer; see ``trainable``).
    constant_names : list of (int, str)
        ``(node, name)`` of every constant, in the order of :meth:`all_constants`.
    trainable_names : list of (int, str)
        The constants that learn, in the order of ``constants`` when it is a Parameter.

    Examples
    --------
    >>> layer = HeteroActivation(["relu", ("a*sin(w*num)", {"a": 1.0, "w": 3.0})])
    >>> layer(torch.randn(16, 2)).shape
    torch.Size([16, 2])
    """

    def __init__(self, configs: Sequence[Any], *, trainable: Trainable = True, method: str = "AUTO",
                 dtype: Optional[torch.dtype] = None, strict: bool = False):
        super().__init__(configs, "activation", trainable, method, dtype, strict)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``f_j(x[..., j])`` for every node ``j``: a new tensor of ``x``'s shape."""
        self._check("x", x, self.n_nodes)
        return ops.call_activation(x, self.all_constants(), self._layer_id)
