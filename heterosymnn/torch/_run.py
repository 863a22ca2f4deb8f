"""The operators' real work: tensors in, kernels called, tensors out.

Every result is a new contiguous tensor (never a view of an input); inputs
reach the kernels as views (:mod:`._handover`), features last.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np
import torch

from . import _handover as handover
from ._kernels import LayerKernels


def activation_forward(kernels: LayerKernels, x: torch.Tensor, constants: torch.Tensor) -> torch.Tensor:
    out = handover.output(x)
    with handover.device_context(x.device):  # first: a new CUDA compiler loads on this device
        entry = kernels.entry(x.dtype, x.device)
        kernels.sync(entry, constants)
        _features_last(kernels, entry.comp.forward_kernel, (handover.array(x),), handover.array(out))
    return out


def activation_backward(kernels: LayerKernels, x: torch.Tensor, grad: torch.Tensor, constants: torch.Tensor,
                        want_constants: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    want_constants = want_constants and bool(kernels.constant_names)
    out = handover.output(x)
    summed = torch.zeros(len(kernels.constant_names), dtype=torch.float64, device=x.device)
    with handover.device_context(x.device):
        entry = kernels.entry(x.dtype, x.device)
        kernels.sync(entry, constants)
        keywords = {"constants_grad": handover.array(summed)} if want_constants else {}
        _features_last(kernels, entry.comp.backward_kernel, (handover.array(x), handover.array(grad)),
                       handover.array(out), **keywords)
    return out, summed.to(constants.dtype)


def loss_forward(kernels: LayerKernels, y_pred: torch.Tensor, y_true: torch.Tensor,
                 constants: torch.Tensor) -> torch.Tensor:
    out = handover.output(y_pred)
    with handover.device_context(y_pred.device):
        entry = kernels.entry(y_pred.dtype, y_pred.device)
        kernels.sync(entry, constants)
        _features_last(kernels, entry.comp.forward_kernel,
                       (handover.array(y_pred), handover.array(y_true)), handover.array(out))
    return out


def loss_backward(kernels: LayerKernels, y_pred: torch.Tensor, y_true: torch.Tensor, grad: torch.Tensor,
                  constants: torch.Tensor, want_constants: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """``grad * dL/dy_pred`` and ``sum(grad * dL/dc)``.

    The loss kernels return the unweighted ``dL/dy_pred`` and ``sum(dL/dc)``: exact
    for a uniform ``grad`` (a mean or a sum of the losses: one call, scaled);
    any other ``grad`` takes one call per distinct weight (one config) or per row.
    """
    want_constants = want_constants and bool(kernels.constant_names)
    uniform = _uniform_value(grad)
    out = handover.output(y_pred)
    summed = torch.zeros(len(kernels.constant_names), dtype=torch.float64, device=y_pred.device)
    with handover.device_context(y_pred.device):
        entry = kernels.entry(y_pred.dtype, y_pred.device)
        kernels.sync(entry, constants)
        keywords = {"constants_grad": handover.array(summed)} if want_constants and uniform is not None else {}
        _features_last(kernels, entry.comp.backward_kernel,
                       (handover.array(y_pred), handover.array(y_true)), handover.array(out), **keywords)
    if uniform is not None:
        out.mul_(uniform)
        summed.mul_(uniform)
    else:
        out.mul_(grad)
        if want_constants:
            summed = _weighted_constants_grad(kernels, y_pred, y_true, grad, constants).to(y_pred.device)
    return out, summed.to(constants.dtype)


def _features_last(kernels: LayerKernels, kernel: Any, inputs: tuple, out: Any, **keywords: Any) -> None:
    # One loss config applies to every element whatever the shape, so it needs no layout.
    kernel(*inputs, out=out, **({} if kernels.elementwise else {"features_last": True}), **keywords)


def _uniform_value(grad: torch.Tensor) -> Optional[torch.Tensor]:
    """The one value of ``grad`` (a 0-d tensor) if all its elements are equal, else None."""
    if grad.numel() == 0:
        return grad.new_zeros(())
    first = grad[(0,) * grad.dim()]
    if all(stride == 0 for stride in grad.stride()):  # expanded: the gradient of a mean or sum (no sync)
        return first
    return first if bool((grad == first).all()) else None


def _weighted_constants_grad(kernels: LayerKernels, y_pred: torch.Tensor, y_true: torch.Tensor,
                             grad: torch.Tensor, constants: torch.Tensor) -> torch.Tensor:
    """``sum(grad * dL/dc)`` for a non-uniform ``grad``, on the host, from unweighted sums."""
    entry = kernels.host_entry(y_pred.dtype)
    kernels.sync(entry, constants)
    comp = entry.comp
    pred, true, weight = (handover.array(t.detach().to("cpu")) for t in (y_pred, y_true, grad))
    total = np.zeros(len(kernels.constant_names))
    part = np.zeros_like(total)
    calls = 0
    if kernels.elementwise:  # one loss for every element: group the elements by weight
        pred, true, weight = pred.reshape(-1), true.reshape(-1), weight.reshape(-1)
        values, inverse = np.unique(weight, return_inverse=True)
        order = np.argsort(inverse.reshape(-1), kind="stable")
        bounds = np.concatenate(([0], np.cumsum(np.bincount(inverse.reshape(-1), minlength=values.size))))
        for group, value in enumerate(values):
            if value == 0:
                continue
            chosen = order[bounds[group]:bounds[group + 1]]
            comp.backward_kernel(pred[chosen], true[chosen], constants_grad=part)
            total += value * part
            calls += 1
    else:  # one loss per column: row by row, each constant weighted by its node's column
        n = kernels.n_nodes
        pred, true, weight = pred.reshape(-1, n), true.reshape(-1, n), weight.reshape(-1, n)
        owners = np.array([node for node, _ in kernels.constant_names], dtype=np.intp)
        for row in range(pred.shape[0]):
            scratch = np.empty((1, n), dtype=pred.dtype)
            comp.backward_kernel(pred[row:row + 1], true[row:row + 1], out=scratch, features_last=True,
                                 constants_grad=part)
            total += weight[row, owners] * part
            calls += 1
    kernels.warn_weighted(calls)
    return torch.from_numpy(total)
