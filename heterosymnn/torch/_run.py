"""The operators' real work: tensors in, kernels called, tensors out.

Every result is a new contiguous tensor (never a view of an input); inputs
reach the kernels as views (:mod:`._handover`), features last.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

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
    """``grad * dL/dy_pred`` and ``sum(grad * dL/dc)``, in one kernel call on ``y_pred``'s device.

    The gradient of a mean or a sum of the losses is one value expanded (stride 0): the
    unweighted kernel, then a scale, reads no gradient array at all. Any other ``grad``
    (``reduction="none"`` followed by a weighted sum ...) goes to the kernel as its
    ``grad=`` weights: both results weighted element by element in the same pass.
    """
    want_constants = want_constants and bool(kernels.constant_names)
    uniform = _uniform_value(grad)
    out = handover.output(y_pred)
    summed = torch.zeros(len(kernels.constant_names), dtype=torch.float64, device=y_pred.device)
    with handover.device_context(y_pred.device):
        entry = kernels.entry(y_pred.dtype, y_pred.device)
        kernels.sync(entry, constants)
        keywords = {"constants_grad": handover.array(summed)} if want_constants else {}
        if uniform is None:
            keywords["grad"] = handover.array(grad)
        _features_last(kernels, entry.comp.backward_kernel,
                       (handover.array(y_pred), handover.array(y_true)), handover.array(out), **keywords)
    if uniform is not None:
        out.mul_(uniform)
        summed.mul_(uniform)
    return out, summed.to(constants.dtype)


def _features_last(kernels: LayerKernels, kernel: Any, inputs: tuple, out: Any, **keywords: Any) -> None:
    # One loss config applies to every element whatever the shape, so it needs no layout.
    kernel(*inputs, out=out, **({} if kernels.elementwise else {"features_last": True}), **keywords)


def _uniform_value(grad: torch.Tensor) -> Optional[torch.Tensor]:
    """The one value of ``grad`` (a 0-d tensor) when it is one value expanded, else None.

    Read from the strides alone: comparing the values would cost a pass and, on a GPU,
    a synchronisation, while the weighted kernel costs no more than the plain one.
    """
    if grad.numel() == 0:
        return grad.new_zeros(())
    if all(stride == 0 for stride in grad.stride()):  # expanded: the gradient of a mean or sum
        return grad[(0,) * grad.dim()]
    return None
