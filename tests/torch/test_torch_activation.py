"""HeteroActivation: values, gradients (gradcheck), layouts, trainable constants, errors, repr."""
from __future__ import annotations

import gc
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch.library", reason="PyTorch is not installed: pip install 'heterosymnn[torch]'")
import torch  # noqa: E402

from heterosymnn import FormulaParsingError, SymbolicJITCompiler, config  # noqa: E402
from heterosymnn.torch import HeteroActivation, ops  # noqa: E402
from torch_support import (METHODS, NAMED_ACTIVATIONS, WITH_CONSTANTS, away_from_kinks,  # noqa: E402
                           tensor)

CORPORA = {"named": NAMED_ACTIVATIONS, "with_constants": WITH_CONSTANTS}


def _reference(configs, x: np.ndarray) -> np.ndarray:
    """Node j's formula on x[..., j], by the NumPy backend in its own (nodes-first) layout."""
    comp = SymbolicJITCompiler(configs, "CPU_PYTHON", dtype="float64")
    flat = x.reshape(-1, x.shape[-1])
    return comp.forward_kernel(np.ascontiguousarray(flat.T)).T.reshape(x.shape)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("corpus", sorted(CORPORA))
def test_gradcheck_input_and_constants(method, corpus):
    configs = CORPORA[corpus]
    layer = HeteroActivation(configs, method=method, dtype=torch.float64, strict=True)
    assert layer.calculation_method == method
    x = tensor(away_from_kinks((3, len(configs)), seed=1), requires_grad=True)
    constants = layer.constants.detach().clone().requires_grad_(len(layer.constant_names) > 0)
    inputs = (x, constants) if constants.requires_grad else (x,)

    def run(x, constants=constants):
        return ops.activation(x, constants, layer._layer_id)

    assert torch.autograd.gradcheck(run, inputs)
    np.testing.assert_allclose(layer(x).detach().numpy(), _reference(configs, x.detach().numpy()),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_any_leading_shape_and_float32(method):
    configs = WITH_CONSTANTS
    layer = HeteroActivation(configs, method=method)
    values = away_from_kinks((2, 3, len(configs)), seed=2)
    y = layer(tensor(values, dtype=torch.float32))
    assert y.shape == (2, 3, len(configs)) and y.dtype == torch.float32 and y.is_contiguous()
    np.testing.assert_allclose(y.detach().numpy(), _reference(configs, values), rtol=2e-5, atol=2e-6)
    single = layer(tensor(values[0, 0], dtype=torch.float32))  # a single sample, shape (n_nodes,)
    np.testing.assert_allclose(single.detach().numpy(), y[0, 0].detach().numpy(), rtol=1e-6)
    empty = torch.zeros(0, len(configs), requires_grad=True)
    out = layer(empty)
    out.sum().backward()
    assert out.shape == (0, len(configs)) and empty.grad.shape == (0, len(configs))
    assert torch.all(layer.constants.grad == 0)


@pytest.mark.parametrize("method", METHODS)
def test_non_contiguous_input_and_gradient(method):
    configs = WITH_CONSTANTS
    layer = HeteroActivation(configs, method=method, dtype=torch.float64)
    base = tensor(away_from_kinks((len(configs), 5), seed=3))
    x = base.t().requires_grad_()  # (5, n_nodes), not contiguous
    assert not x.is_contiguous()
    grad = tensor(away_from_kinks((len(configs), 5), seed=4)).t()
    layer(x).backward(grad)
    x_grad, c_grad = x.grad.clone(), layer.constants.grad.clone()
    x2 = x.detach().contiguous().requires_grad_()
    layer.constants.grad = None
    layer(x2).backward(grad.contiguous())
    torch.testing.assert_close(x_grad, x2.grad, rtol=0, atol=0)
    torch.testing.assert_close(c_grad, layer.constants.grad, rtol=0, atol=0)


def test_constants_are_one_parameter_aligned_with_names():
    layer = HeteroActivation(["relu", ("a*sin(w*num)", {"a": 1.0, "w": 3.0}), "leaky_relu"], method="CPU_PYTHON")
    assert layer.constant_names == [(1, "a"), (1, "w"), (2, "alpha")]
    assert [name for name, _ in layer.named_parameters()] == ["constants"]
    torch.testing.assert_close(layer.constants.detach(), torch.tensor([1.0, 3.0, 0.01]))
    layer.set_constants(1, w=2.0)
    assert layer.node_constants() == [{}, {"a": 1.0, "w": 2.0}, {"alpha": pytest.approx(0.01)}]
    x = torch.full((4, 3), 0.5)
    torch.testing.assert_close(layer(x)[:, 1], torch.sin(2.0 * x[:, 1]))
    with pytest.raises(KeyError, match="node 1 has no constant 'b'; its constants are: a, w"):
        layer.set_constants(1, b=1.0)


def test_trainable_false_is_a_buffer():
    layer = HeteroActivation([("a*tanh(num)", {"a": 2.0})], trainable=False, method="CPU_PYTHON")
    assert list(layer.parameters()) == [] and "constants" in dict(layer.named_buffers())
    x = torch.randn(3, 1, requires_grad=True)
    layer(x).sum().backward()
    torch.testing.assert_close(x.grad, 2.0 * (1 - torch.tanh(x.detach()) ** 2))


def test_trainable_names_only_those_learn():
    configs = [("a*sin(w*num)", {"a": 1.0, "w": 3.0}), ("a*tanh(b*num)", {"a": 0.5, "b": 2.0}), "relu"]
    full = HeteroActivation(configs, method="CPU_PYTHON", dtype=torch.float64)
    some = HeteroActivation(configs, trainable={"w", (1, "b")}, method="CPU_PYTHON", dtype=torch.float64)
    assert some.trainable_names == [(0, "w"), (1, "b")]
    assert dict(some.named_parameters())["constants"].shape == (2,)
    assert some.frozen_constants.shape == (2,)
    torch.testing.assert_close(some.all_constants(), full.constants.detach())
    x = tensor(away_from_kinks((6, 3), seed=5))
    full(x).pow(2).sum().backward()
    some(x).pow(2).sum().backward()
    torch.testing.assert_close(some.constants.grad, full.constants.grad[[1, 3]])
    # An optimizer with weight decay never moves a frozen constant.
    frozen = some.frozen_constants.clone()
    optimizer = torch.optim.AdamW(some.parameters(), lr=0.1, weight_decay=0.5)
    optimizer.step()
    torch.testing.assert_close(some.frozen_constants, frozen, rtol=0, atol=0)
    assert not torch.equal(some.constants.detach(), torch.tensor([3.0, 2.0], dtype=torch.float64))
    some.set_constants(1, a=0.25, b=1.5)
    assert some.node_constants()[1] == {"a": 0.25, "b": 1.5}
    with pytest.raises(ValueError, match=r"\['v'\] are not constants of this layer; its constants are: a, b, w"):
        HeteroActivation(configs, trainable={"v"}, method="CPU_PYTHON")


def test_training_changes_the_constants_and_the_kernels_follow():
    layer = HeteroActivation([("a*sin(w*num)", {"a": 1.0, "w": 1.0})], method="CPU_PYTHON", dtype=torch.float64)
    x = torch.linspace(-2, 2, 64, dtype=torch.float64).unsqueeze(1)
    target = 0.5 * torch.sin(1.7 * x)
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.05)
    for _ in range(300):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(layer(x), target).backward()
        optimizer.step()
    a, w = layer.constants.tolist()
    assert abs(a - 0.5) < 0.02 and abs(w - 1.7) < 0.02
    with torch.no_grad():  # an in-place change through .data bypasses the version counter: still seen
        layer.constants.data.copy_(torch.tensor([2.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(layer(x), 2.0 * torch.sin(x))


def test_dtype_switch_builds_kernels_for_the_new_dtype():
    layer = HeteroActivation(["tanh", ("a*num", {"a": 3.0})], method="CPU_PYTHON")
    x32 = torch.randn(4, 2)
    layer.double()
    assert layer.constants.dtype == torch.float64 and isinstance(layer.constants, torch.nn.Parameter)
    y64 = layer(x32.double())
    assert y64.dtype == torch.float64
    with pytest.raises(TypeError, match=r"x has dtype torch.float32, but the layer is torch.float64: convert the "
                                        r"input with x.to\(torch.float64\), or the layer with layer.to\(torch.float32\)"):
        layer(x32)
    layer.float()
    torch.testing.assert_close(layer(x32), y64.float())
    layer.half()
    with pytest.raises(TypeError, match="layer.float"):
        layer(x32.half())


def test_clear_errors():
    layer = HeteroActivation(["relu"] * 8, method="CPU_JIT")
    with pytest.raises(ValueError, match=r"expected the last dimension of x to be 8 \(one feature per node, shape "
                                         r"\(\.\.\., 8\)\), got shape \(5, 7\)"):
        layer(torch.zeros(5, 7))
    with pytest.raises(ValueError, match="got a 0-d tensor"):
        layer(torch.tensor(1.0))
    with pytest.raises(TypeError, match="x has dtype torch.int64, but the layer is torch.float32"):
        layer(torch.zeros(2, 8, dtype=torch.int64))
    with pytest.raises(TypeError, match="x must be a torch.Tensor, got numpy.ndarray"):
        layer(np.zeros((2, 8), dtype=np.float32))
    with pytest.raises(ValueError, match="x is on meta, but the layer is on cpu"):
        layer(torch.zeros(2, 8, device="meta"))
    # A CUDA tensor on a CPU-only layer (checked before any CUDA call, so testable without a GPU).
    with pytest.raises(ValueError, match="method='CPU_JIT', which runs on the CPU: build it with method='AUTO'"):
        layer._kernels.entry(torch.float32, torch.device("cuda", 0))
    with pytest.raises(FormulaParsingError, match="node 1"):
        HeteroActivation(["relu", "factorial(num)"], method="CPU_PYTHON")
    with pytest.raises(ValueError, match="dtype must be torch.float32 or torch.float64"):
        HeteroActivation(["relu"], dtype=torch.float16)
    with pytest.raises(ValueError, match="calculation_method must be one of"):
        HeteroActivation(["relu"], method="TPU")


def test_repr_shows_the_formulas_and_shortens_big_layers():
    small = HeteroActivation(["relu", ("a*sin(w*num)", {"a": 1.0, "w": 3.0})], method="CPU_PYTHON")
    assert repr(small) == ("HeteroActivation(formulas=['relu', 'a*sin(w*num)'], method='CPU_PYTHON', "
                           "dtype=torch.float32, trainable=True)")
    big = HeteroActivation(["relu"] * 500 + ["tanh"] * 300 + [f"sin({k}*num)" for k in range(1, 11)],
                           trainable=False, method="CPU_PYTHON")
    text = repr(big)
    assert text.startswith("HeteroActivation(810 nodes: 'relu' x500, 'tanh' x300, 'sin(1*num)' x1")
    assert "+6 more formulas" in text and len(text) < 300


def test_a_deleted_layer_frees_its_compilers():
    from heterosymnn.torch import _kernels

    layer = HeteroActivation(["relu"], method="CPU_PYTHON")
    layer_id, constants = layer._layer_id, layer.constants.detach()
    assert _kernels.lookup(layer_id) is layer._kernels
    del layer
    gc.collect()
    assert layer_id not in _kernels._REGISTRY
    with pytest.raises(RuntimeError, match=f"heterosymnn layer {layer_id} no longer exists"):
        ops.activation(torch.zeros(1, 1), constants, layer_id)


def _built_kinds(cache_dir) -> list:
    kinds = []
    for log in Path(cache_dir).rglob("builds.jsonl"):
        kinds += [json.loads(line).get("kind") for line in log.read_text().splitlines() if line.strip()]
    return kinds


@pytest.mark.parametrize("trainable", [True, False])
def test_constants_gradient_functions_are_built_only_by_a_backward_that_needs_them(trainable, tmp_path):
    """Construction and forward never derive with respect to the constants; frozen constants never do."""
    with config.override(cache_dir=str(tmp_path)):  # a cache of its own: it counts builds
        layer = HeteroActivation(WITH_CONSTANTS, method="CPU_JIT", trainable=trainable, strict=True,
                                 dtype=torch.float64)
        x = tensor(away_from_kinks((3, len(WITH_CONSTANTS)), seed=4), requires_grad=True)
        y = layer(x)
        assert "c-module" in _built_kinds(tmp_path)
        assert "c-cgrad-module" not in _built_kinds(tmp_path)
        y.sum().backward()
    assert ("c-cgrad-module" in _built_kinds(tmp_path)) == trainable
    assert (layer.constants.grad is not None) == trainable
    expected = SymbolicJITCompiler(WITH_CONSTANTS, "CPU_PYTHON", dtype="float64").backward_kernel(
        np.ascontiguousarray(x.detach().numpy().T), np.ones((len(WITH_CONSTANTS), 3))).T
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-12, atol=1e-12)
