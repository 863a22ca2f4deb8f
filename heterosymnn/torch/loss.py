"""HeteroLoss: a loss written as a formula, with learnable constants."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import torch

from . import ops
from ._module import HeteroModule, Trainable

REDUCTIONS = ("mean", "sum", "none")


class HeteroLoss(HeteroModule):
    """A loss formula over ``y_pred`` and ``y_true`` (``"huber"``, ``"w*(y_pred - y_true)**2"``).

    Parameters
    ----------
    config : str, (str, dict) or list of them
        One config: the same loss for every element (inputs of any shape). A list
        of configs: one loss per output column, inputs of shape ``(..., n_out)``.
    reduction : {"mean", "sum", "none"}
        As in ``torch.nn`` losses. ``"none"`` returns the element-wise losses;
        any weighting of them afterwards (``(losses * w).sum()``) is backpropagated
        by one kernel call that weighs both gradients element by element
        (``backward_kernel(..., grad=w)``), on the tensors' device.
    trainable, method, dtype, strict
        As for :class:`HeteroActivation`.

    Notes
    -----
    There is no gradient with respect to ``y_true``: pass a tensor that does not
    require one (``y_true.detach()``).

    Examples
    --------
    >>> loss = HeteroLoss(("huber", {"delta": 0.5}))
    >>> loss(torch.randn(8, 3), torch.randn(8, 3)).shape
    torch.Size([])
    """

    def __init__(self, config: Any, reduction: str = "mean", *, trainable: Trainable = True,
                 method: str = "AUTO", dtype: Optional[torch.dtype] = None, strict: bool = False):
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        single = isinstance(config, str) or (isinstance(config, tuple) and len(config) == 2
                                             and isinstance(config[1], Mapping))
        super().__init__([config] if single else list(config), "loss", trainable, method, dtype, strict)
        self.reduction = reduction

    def forward(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        """The loss of ``y_pred`` against ``y_true`` (same shapes), reduced as ``reduction`` says."""
        last = None if self.n_nodes == 1 else self.n_nodes
        self._check("y_pred", y_pred, last)
        self._check("y_true", y_true, last)
        if y_pred.shape != y_true.shape:
            raise ValueError(f"y_true has shape {tuple(y_true.shape)}, but y_pred has shape {tuple(y_pred.shape)}; "
                             f"they must match (no broadcasting): reshape or expand y_true")
        if y_true.requires_grad:
            raise ValueError("heterosymnn losses give no gradient with respect to y_true: pass y_true.detach()")
        losses = ops.call_loss(y_pred, y_true, self.all_constants(), self._layer_id)
        if self.reduction == "mean":
            return losses.mean()
        if self.reduction == "sum":
            return losses.sum()
        return losses

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, reduction={self.reduction!r}"
