"""The custom operators: ``heterosymnn::activation`` and ``heterosymnn::loss``, with autograd.

Registered with :func:`torch.library.custom_op`, so eager mode, ``torch.compile``
(``fullgraph=True``) and :func:`torch.library.opcheck` all see one opaque
operator with a fake implementation. The backward of each is a second custom
operator that calls the backward kernel once, producing the input's gradient
and the constants' gradient in the same pass.

Operators take tensors and primitives only: the layer's compilers are found by
``layer_id`` (see :mod:`._kernels`), and the constants are an input tensor, so
autograd sees them.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from . import _run
from ._kernels import lookup


@torch.library.custom_op("heterosymnn::activation", mutates_args=())
def activation(x: Tensor, constants: Tensor, layer_id: int) -> Tensor:
    """Node ``j``'s formula applied to ``x[..., j]`` with the given constants (a new tensor)."""
    return _run.activation_forward(lookup(layer_id), x, constants)


@activation.register_fake
def _activation_fake(x: Tensor, constants: Tensor, layer_id: int) -> Tensor:
    return x.new_empty(x.shape)


@torch.library.custom_op("heterosymnn::activation_backward", mutates_args=())
def activation_backward(x: Tensor, grad: Tensor, constants: Tensor, layer_id: int,
                        constants_grad: bool) -> Tuple[Tensor, Tensor]:
    """``grad * f'(x)`` and, if ``constants_grad``, ``sum(grad * df/dc)`` per constant (else zeros)."""
    return _activation_backward_eager(x, grad, constants, layer_id, constants_grad)


def _activation_backward_eager(x: Tensor, grad: Tensor, constants: Tensor, layer_id: int,
                               constants_grad: bool) -> Tuple[Tensor, Tensor]:
    return _run.activation_backward(lookup(layer_id), x, grad, constants, constants_grad)


@activation_backward.register_fake
def _activation_backward_fake(x: Tensor, grad: Tensor, constants: Tensor, layer_id: int,
                              constants_grad: bool) -> Tuple[Tensor, Tensor]:
    return x.new_empty(x.shape), constants.new_empty(constants.shape)


def _activation_setup(ctx, inputs, output) -> None:
    x, constants, layer_id = inputs
    ctx.save_for_backward(x, constants)
    ctx.layer_id = layer_id


def _activation_grad(ctx, grad: Tensor, backward=activation_backward):
    x, constants = ctx.saved_tensors
    want_x, want_constants = ctx.needs_input_grad[:2]
    grad_x, grad_constants = backward(x, grad, constants, ctx.layer_id, want_constants)
    return (grad_x if want_x else None), (grad_constants if want_constants else None), None


activation.register_autograd(_activation_grad, setup_context=_activation_setup)


@torch.library.custom_op("heterosymnn::loss", mutates_args=())
def loss(y_pred: Tensor, y_true: Tensor, constants: Tensor, layer_id: int) -> Tensor:
    """The element-wise loss ``L(y_pred, y_true)`` (one config, or one per last-axis column)."""
    return _run.loss_forward(lookup(layer_id), y_pred, y_true, constants)


@loss.register_fake
def _loss_fake(y_pred: Tensor, y_true: Tensor, constants: Tensor, layer_id: int) -> Tensor:
    return y_pred.new_empty(y_pred.shape)


@torch.library.custom_op("heterosymnn::loss_backward", mutates_args=())
def loss_backward(y_pred: Tensor, y_true: Tensor, grad: Tensor, constants: Tensor, layer_id: int,
                  constants_grad: bool) -> Tuple[Tensor, Tensor]:
    """``grad * dL/dy_pred`` and, if ``constants_grad``, ``sum(grad * dL/dc)`` per constant (else zeros)."""
    return _loss_backward_eager(y_pred, y_true, grad, constants, layer_id, constants_grad)


def _loss_backward_eager(y_pred: Tensor, y_true: Tensor, grad: Tensor, constants: Tensor, layer_id: int,
                         constants_grad: bool) -> Tuple[Tensor, Tensor]:
    return _run.loss_backward(lookup(layer_id), y_pred, y_true, grad, constants, constants_grad)


@loss_backward.register_fake
def _loss_backward_fake(y_pred: Tensor, y_true: Tensor, grad: Tensor, constants: Tensor, layer_id: int,
                        constants_grad: bool) -> Tuple[Tensor, Tensor]:
    return y_pred.new_empty(y_pred.shape), constants.new_empty(constants.shape)


def _loss_setup(ctx, inputs, output) -> None:
    y_pred, y_true, constants, layer_id = inputs
    ctx.save_for_backward(y_pred, y_true, constants)
    ctx.layer_id = layer_id


def _loss_grad(ctx, grad: Tensor, backward=loss_backward):
    y_pred, y_true, constants = ctx.saved_tensors
    want_pred, want_true, want_constants = ctx.needs_input_grad[:3]
    if want_true:
        raise RuntimeError("heterosymnn losses give no gradient with respect to y_true; pass y_true.detach()")
    grad_pred, grad_constants = backward(y_pred, y_true, grad, constants, ctx.layer_id, want_constants)
    return (grad_pred if want_pred else None), None, (grad_constants if want_constants else None), None


loss.register_autograd(_loss_grad, setup_context=_loss_setup)


# -- eager calls ---------------------------------------------------------------------------------
# A custom operator costs about 40 us per training step in eager mode (dispatch of the operator
# and of its backward operator), more than the kernels of a small layer (7.8 us at 32 x 1). So an
# eager call runs the same work through a plain autograd.Function (49 us a step instead of 90);
# under torch.compile / export the custom operator is what the graph must see, so it stays there.
class _EagerActivation(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, constants: Tensor, layer_id: int) -> Tensor:
        ctx.save_for_backward(x, constants)
        ctx.layer_id = layer_id
        return _run.activation_forward(lookup(layer_id), x, constants)

    @staticmethod
    @torch.autograd.function.once_differentiable  # double backward: a clear error, as for the op
    def backward(ctx, grad: Tensor):
        return _activation_grad(ctx, grad, _activation_backward_eager)


class _EagerLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y_pred: Tensor, y_true: Tensor, constants: Tensor, layer_id: int) -> Tensor:
        ctx.save_for_backward(y_pred, y_true, constants)
        ctx.layer_id = layer_id
        return _run.loss_forward(lookup(layer_id), y_pred, y_true, constants)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        return _loss_grad(ctx, grad, _loss_backward_eager)


def call_activation(x: Tensor, constants: Tensor, layer_id: int) -> Tensor:
    """:func:`activation`, through the cheaper eager path unless a graph is being traced."""
    if torch.compiler.is_compiling():
        return activation(x, constants, layer_id)
    return _EagerActivation.apply(x, constants, layer_id)


def call_loss(y_pred: Tensor, y_true: Tensor, constants: Tensor, layer_id: int) -> Tensor:
    """:func:`loss`, through the cheaper eager path unless a graph is being traced."""
    if torch.compiler.is_compiling():
        return loss(y_pred, y_true, constants, layer_id)
    return _EagerLoss.apply(y_pred, y_true, constants, layer_id)
