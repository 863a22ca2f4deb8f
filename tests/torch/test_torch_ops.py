"""The custom operators: torch.library.opcheck, and torch.compile(fullgraph=True) against eager."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch.library", reason="PyTorch is not installed: pip install 'heterosymnn[torch]'")
import torch  # noqa: E402

from heterosymnn.torch import HeteroActivation, HeteroLoss, ops  # noqa: E402
from torch_support import LOSSES, METHODS, WITH_CONSTANTS, away_from_kinks, tensor  # noqa: E402


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_opcheck_activation(method, dtype):
    layer = HeteroActivation(WITH_CONSTANTS, method=method, dtype=dtype)
    constants = layer.constants.detach().clone().requires_grad_()
    for shape in [(3, len(WITH_CONSTANTS)), (2, 1, len(WITH_CONSTANTS))]:
        x = tensor(away_from_kinks(shape, seed=len(shape)), dtype=dtype, requires_grad=True)
        torch.library.opcheck(ops.activation, (x, constants, layer._layer_id))
    torch.library.opcheck(ops.activation, (x.detach(), constants.detach(), layer._layer_id))


@pytest.mark.parametrize("method", METHODS)
def test_opcheck_loss(method):
    columns = HeteroLoss(LOSSES, method=method, dtype=torch.float64)
    single = HeteroLoss(LOSSES[0], method=method, dtype=torch.float64)
    for loss, shape in [(columns, (5, len(LOSSES))), (single, (2, 3))]:
        y_pred = tensor(away_from_kinks(shape, seed=7), requires_grad=True)
        y_true = tensor(away_from_kinks(shape, seed=8))
        constants = loss.constants.detach().clone().requires_grad_()
        torch.library.opcheck(ops.loss, (y_pred, y_true, constants, loss._layer_id))


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # Inductor's
@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compiled_model_matches_eager(backend):
    """fullgraph=True: the layer is one opaque operator, no graph break.

    ``aot_eager`` traces everything Inductor does (Dynamo, AOT autograd, fake tensors) in a second on
    2 cores; ``inductor`` also generates and builds C++ for the Linear layers around it (~15 s there).
    """
    torch.manual_seed(0)
    layer = HeteroActivation([("a*sin(w*num)", {"a": 1.0, "w": 2.0}), "relu", ("tanh(b*num)", {"b": 0.5}),
                              "leaky_relu"], method="CPU_JIT")
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), layer, torch.nn.Linear(4, 1))
    loss_fn = HeteroLoss(("huber", {"delta": 0.5}), method="CPU_JIT")
    x, y = torch.randn(16, 3), torch.randn(16, 1)

    def step(model_call):
        model.zero_grad()
        loss_fn.zero_grad()
        loss = loss_fn(model_call(x), y)
        loss.backward()
        return loss.detach(), layer.constants.grad.clone(), loss_fn.constants.grad.clone(), model[0].weight.grad.clone()

    eager = step(model)
    compiled = step(torch.compile(model, fullgraph=True, backend=backend))
    for got, expected in zip(compiled, eager):
        torch.testing.assert_close(got, expected)
    assert np.all(np.isfinite(compiled[1].numpy())) and compiled[1].abs().sum() > 0


@pytest.mark.parametrize("method", METHODS)
def test_eager_calls_take_the_cheap_path_with_the_same_gradients(method):
    """Eager mode runs an autograd.Function (no operator dispatch); its values and gradients are
    the custom operator's, and it refuses a double backward as the operator does."""
    layer = HeteroActivation(WITH_CONSTANTS, method=method, dtype=torch.float64, strict=True)
    x = tensor(away_from_kinks((4, len(WITH_CONSTANTS)), seed=3), requires_grad=True)
    constants = layer.constants.detach().clone().requires_grad_(True)
    eager = ops.call_activation(x, constants, layer._layer_id)
    assert "EagerActivation" in type(eager.grad_fn).__name__
    assert torch.autograd.gradcheck(lambda x, c: ops.call_activation(x, c, layer._layer_id), (x, constants))
    grad = torch.randn_like(eager)
    by_function = torch.autograd.grad(eager, (x, constants), grad)
    by_operator = torch.autograd.grad(ops.activation(x, constants, layer._layer_id), (x, constants), grad)
    for first, second in zip(by_function, by_operator):
        torch.testing.assert_close(first, second, rtol=0, atol=0)
    # A gradient of a gradient is refused, never silently wrong.
    gx, = torch.autograd.grad((ops.call_activation(x, constants, layer._layer_id) ** 2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice a function that was marked with @once_differentiable"):
        gx.sum().backward()
    assert "EagerActivation" in type(layer(x).grad_fn).__name__  # the module's own calls


@pytest.mark.parametrize("method", METHODS)
def test_eager_loss_calls_match_the_operator(method):
    loss = HeteroLoss(LOSSES, method=method, dtype=torch.float64, strict=True)
    y_pred = tensor(away_from_kinks((5, len(LOSSES)), seed=4), requires_grad=True)
    y_true = tensor(away_from_kinks((5, len(LOSSES)), seed=5))
    constants = loss.constants.detach().clone().requires_grad_(True)
    eager = ops.call_loss(y_pred, y_true, constants, loss._layer_id)
    assert "EagerLoss" in type(eager.grad_fn).__name__
    assert torch.autograd.gradcheck(lambda p, c: ops.call_loss(p, y_true, c, loss._layer_id).sum(),
                                    (y_pred, constants))
