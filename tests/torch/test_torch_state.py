"""Saving and copying layers: state_dict, torch.save/load, deepcopy, pickle, dtype round trips."""
from __future__ import annotations

import copy
import io
import pickle

import pytest

pytest.importorskip("torch.library", reason="PyTorch is not installed: pip install 'heterosymnn[torch]'")
import torch  # noqa: E402

from heterosymnn.torch import HeteroActivation, HeteroLoss  # noqa: E402

CONFIGS = [("a*sin(w*num)", {"a": 1.0, "w": 3.0}), "relu", ("tanh(b*num)", {"b": 0.5})]


def _trained(trainable=True) -> torch.nn.Sequential:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), HeteroActivation(CONFIGS, trainable=trainable,
                                                                          method="CPU_JIT"))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(8, 2)).pow(2).sum().backward()
        optimizer.step()
    return model


def _same(model, other, x=torch.linspace(-1, 1, 10).reshape(5, 2)) -> None:
    torch.testing.assert_close(other(x), model(x), rtol=0, atol=0)
    for (name, value), (other_name, other_value) in zip(model.state_dict().items(), other.state_dict().items()):
        assert name == other_name
        torch.testing.assert_close(other_value, value, rtol=0, atol=0)


@pytest.mark.parametrize("trainable", [True, False, {"w"}], ids=str)
def test_state_dict_round_trip(trainable):
    model = _trained(trainable)
    assert set(model.state_dict()) >= {"1.constants"}
    fresh = torch.nn.Sequential(torch.nn.Linear(2, 3), HeteroActivation(CONFIGS, trainable=trainable,
                                                                          method="CPU_JIT"))
    fresh.load_state_dict(model.state_dict())
    _same(model, fresh)


def test_torch_save_load_deepcopy_pickle():
    model = _trained({"w", "b"})
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    copies = [torch.load(buffer, weights_only=False), copy.deepcopy(model), pickle.loads(pickle.dumps(model))]
    for other in copies:
        _same(model, other)
        assert other[1]._layer_id != model[1]._layer_id  # its own compilers
        assert other[1].trainable_names == [(0, "w"), (2, "b")]
    copied = copies[1]
    copied[1].set_constants(0, w=7.0)  # independent of the original
    assert model[1].node_constants()[0]["w"] != 7.0
    x = torch.full((1, 2), 0.3)
    assert not torch.equal(copied(x), model(x))
    copied(x).sum().backward()  # and trainable
    assert copied[1].constants.grad is not None


def test_dtype_round_trip_and_loss_pickle():
    layer = HeteroActivation(CONFIGS, method="CPU_JIT")
    x = torch.randn(4, 3, dtype=torch.float64)
    y64 = layer.double()(x)
    assert layer._kernels.entry(torch.float64, torch.device("cpu")).comp.dtype.name == "float64"
    torch.testing.assert_close(layer.float()(x.float()), y64.float())
    restored = pickle.loads(pickle.dumps(layer.double()))
    torch.testing.assert_close(restored(x), y64, rtol=0, atol=0)
    loss = HeteroLoss([("huber", {"delta": 0.3}), "mse"], "sum", method="CPU_PYTHON")
    loss.set_constants(0, delta=0.4)
    other = pickle.loads(pickle.dumps(loss))
    assert other.reduction == "sum" and other.node_constants() == [{"delta": pytest.approx(0.4)}, {}]
    y_pred, y_true = torch.randn(6, 2), torch.randn(6, 2)
    torch.testing.assert_close(other(y_pred, y_true), loss(y_pred, y_true))
