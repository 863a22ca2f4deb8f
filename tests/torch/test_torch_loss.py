"""HeteroLoss: values, gradients (gradcheck) for every reduction, per-column losses, errors."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

pytest.importorskip("torch.library", reason="PyTorch is not installed: pip install 'heterosymnn[torch]'")
import torch  # noqa: E402

from heterosymnn import PerformanceWarning, SymbolicJITCompiler  # noqa: E402
from heterosymnn.torch import HeteroLoss, ops  # noqa: E402
from torch_support import LOSSES, METHODS, NAMED_LOSSES, tensor  # noqa: E402

COLUMNS = NAMED_LOSSES + LOSSES  # one loss per output column


def _pair(shape, seed: int):
    """y_pred in (0.1, 0.9) (bce's domain), y_true 0.1..0.6 away (no kink of mae, huber, quantile)."""
    rng = np.random.default_rng(seed)
    y_pred = rng.uniform(0.1, 0.9, size=shape)
    offset = rng.uniform(0.1, 0.6, size=shape) * rng.choice([-1, 1], size=shape)
    return tensor(y_pred, requires_grad=True), tensor(y_pred + offset)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gradcheck_per_column_losses(method, reduction):
    loss = HeteroLoss(COLUMNS, reduction, method=method, dtype=torch.float64, strict=True)
    y_pred, y_true = _pair((4, len(COLUMNS)), seed=1)
    constants = loss.constants.detach().clone().requires_grad_()

    def run(y_pred, constants):
        losses = ops.loss(y_pred, y_true, constants, loss._layer_id)
        return {"mean": losses.mean, "sum": losses.sum, "none": lambda: losses}[reduction]()

    with warnings.catch_warnings():
        warnings.simplefilter("error", PerformanceWarning)  # reduction="none" is one weighted call too
        assert torch.autograd.gradcheck(run, (y_pred, constants))
    # The module reduces like torch.nn losses.
    comp = SymbolicJITCompiler(COLUMNS, "CPU_PYTHON", mode="loss", dtype="float64")
    elementwise = comp.forward_kernel(y_pred.detach().numpy().T.copy(), y_true.numpy().T.copy()).T
    expected = {"mean": elementwise.mean(), "sum": elementwise.sum(), "none": elementwise}[reduction]
    np.testing.assert_allclose(loss(y_pred, y_true).detach().numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("config", LOSSES + ["mse", "log_cosh", "bce"], ids=str)
def test_gradcheck_one_loss_for_every_element(method, config):
    loss = HeteroLoss(config, "none", method=method, dtype=torch.float64, strict=True)
    y_pred, y_true = _pair((2, 3, 2), seed=2)  # any shape
    constants = loss.constants.detach().clone().requires_grad_(len(loss.constant_names) > 0)
    inputs = (y_pred, constants) if constants.requires_grad else (y_pred,)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PerformanceWarning)
        assert torch.autograd.gradcheck(lambda p, c=constants: ops.loss(p, y_true, c, loss._layer_id), inputs)
        assert torch.autograd.gradcheck(lambda p, c=constants: ops.loss(p, y_true, c, loss._layer_id).mean(),
                                        inputs)


@pytest.mark.parametrize("method", METHODS)
def test_non_uniform_gradient_is_one_weighted_call(method, monkeypatch):
    loss = HeteroLoss(("w*(y_pred - y_true)**2", {"w": 2.0}), "none", method=method, dtype=torch.float64,
                      strict=True)
    y_pred, y_true = _pair((5, 3), seed=3)
    weights = tensor(np.arange(15.0).reshape(5, 3) % 4)  # 4 distinct weights (one of them 0)
    comp = loss._kernels.entry(torch.float64, torch.device("cpu")).comp
    calls = []
    kernel = comp.backward_kernel

    def counted(*args, **kwargs):
        calls.append(sorted(kwargs))
        return kernel(*args, **kwargs)

    monkeypatch.setattr(comp, "backward_kernel", counted)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PerformanceWarning)  # no slow path to warn about any more
        (loss(y_pred, y_true) * weights).sum().backward()
    assert calls == [["constants_grad", "grad", "out"]]  # one call, weighted in the kernel
    expected = ((y_pred.detach() - y_true) ** 2 * weights).sum()
    torch.testing.assert_close(loss.constants.grad, expected.reshape(1))
    torch.testing.assert_close(y_pred.grad, 2.0 * 2 * (y_pred.detach() - y_true) * weights)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("configs", [["huber", ("c*(y_pred - y_true)**2", {"c": 1.5}), ("quantile", {"tau": 0.3})],
                                     ("c*log(cosh(y_pred - y_true))", {"c": 0.7})], ids=["per-column", "one"])
def test_gradcheck_of_a_weighted_sum_of_unreduced_losses(method, configs):
    loss = HeteroLoss(configs, "none", method=method, dtype=torch.float64, strict=True)
    columns = len(configs) if isinstance(configs, list) else 2
    y_pred, y_true = _pair((6, columns), seed=5)
    weights = tensor(np.random.default_rng(6).normal(size=(6, columns)))
    constants = loss.constants.detach().clone().requires_grad_()

    def run(y_pred, constants):
        return (ops.loss(y_pred, y_true, constants, loss._layer_id) * weights).sum()

    assert torch.autograd.gradcheck(run, (y_pred, constants))
    # Features last through a transposed (non-contiguous) weighting: the same numbers.
    transposed = (ops.loss(y_pred.T.contiguous().T, y_true, constants, loss._layer_id) * weights).sum()
    torch.testing.assert_close(transposed, run(y_pred, constants))


def test_a_learnable_loss_constant():
    loss = HeteroLoss(("quantile", {"tau": 0.5}), method="CPU_PYTHON", dtype=torch.float64)
    assert loss.constant_names == [(0, "tau")]
    y_pred, y_true = _pair((64,), seed=4)
    loss(y_pred, y_true).backward()
    d = y_true - y_pred.detach()  # quantile loss: max(tau*d, (tau - 1)*d)
    torch.testing.assert_close(loss.constants.grad, d.mean().reshape(1))


def test_clear_errors():
    loss = HeteroLoss(["mse", "mae"], method="CPU_PYTHON")
    with pytest.raises(ValueError, match=r"expected the last dimension of y_pred to be 2 \(one feature per node"):
        loss(torch.zeros(4, 3), torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"y_true has shape \(4,\), but y_pred has shape \(4, 2\); they must match"):
        HeteroLoss("mse", method="CPU_PYTHON")(torch.zeros(4, 2), torch.zeros(4))
    with pytest.raises(ValueError, match=r"no gradient with respect to y_true: pass y_true.detach\(\)"):
        loss(torch.zeros(4, 2), torch.zeros(4, 2, requires_grad=True))
    with pytest.raises(ValueError, match="reduction must be 'mean', 'sum' or 'none'"):
        HeteroLoss("mse", reduction="avg")
    assert repr(HeteroLoss(("huber", {"delta": 0.5}), "sum", method="CPU_PYTHON")) == (
        "HeteroLoss(formulas=['huber'], method='CPU_PYTHON', dtype=torch.float32, trainable=True, reduction='sum')")
