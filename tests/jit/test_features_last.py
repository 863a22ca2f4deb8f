"""``features_last=True``: PyTorch's ``(..., n_nodes)`` layout, node ``j`` owning ``[..., j]``.

Every result must equal the nodes-first result of the transposed input, bit for bit.
"""
from __future__ import annotations

import numpy as np
import pytest

from heterosymnn import SymbolicJITCompiler

METHODS = ["CPU_PYTHON", "CPU_JIT"]
CONFIGS = ["relu", ("a*sin(w*num) + b", {"a": 1.5, "w": 3.0, "b": -0.25}), "tanh",
           ("leaky_relu", {"alpha": 0.2}), "sigmoid"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("leading", [(1,), (7,), (2, 3), ()])
def test_features_last_equals_nodes_first_of_the_transpose(method, dtype, leading):
    comp = SymbolicJITCompiler(CONFIGS, method, dtype=dtype, strict=True)
    rng = np.random.default_rng(0)
    x = rng.normal(size=leading + (len(CONFIGS),)).astype(dtype)
    g = rng.normal(size=x.shape).astype(dtype)
    rows = np.ascontiguousarray(x.reshape(-1, len(CONFIGS)).T)
    grows = np.ascontiguousarray(g.reshape(-1, len(CONFIGS)).T)

    forward = comp.forward_kernel(x, features_last=True)
    assert forward.shape == x.shape
    np.testing.assert_array_equal(forward.reshape(-1, len(CONFIGS)).T, comp.forward_kernel(rows))

    cg_last, cg_first = np.zeros(len(comp.constant_names)), np.zeros(len(comp.constant_names))
    backward = comp.backward_kernel(x, g, features_last=True, constants_grad=cg_last)
    np.testing.assert_array_equal(backward.reshape(-1, len(CONFIGS)).T,
                                  comp.backward_kernel(rows, grows, constants_grad=cg_first))
    np.testing.assert_allclose(cg_last, cg_first, rtol=1e-12)

    out = np.empty_like(x)
    assert comp.forward_kernel(x, out, features_last=True) is out
    np.testing.assert_array_equal(out, forward)


@pytest.mark.parametrize("method", METHODS)
def test_a_loss_per_output_column(method):
    losses = ["mse", ("huber", {"delta": 0.5}), "mae"]
    comp = SymbolicJITCompiler(losses, method, mode="loss", dtype="float64", strict=True)
    rng = np.random.default_rng(1)
    y_pred, y_true = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    np.testing.assert_array_equal(comp.forward_kernel(y_pred, y_true, features_last=True).T,
                                  comp.forward_kernel(np.ascontiguousarray(y_pred.T), np.ascontiguousarray(y_true.T)))


@pytest.mark.parametrize("method", METHODS)
def test_a_wrong_last_dimension_is_a_clear_error(method):
    comp = SymbolicJITCompiler(CONFIGS, method, strict=True)
    with pytest.raises(ValueError, match=r"z must have shape \(\.\.\., 5\) with features last .* got shape \(4, 3\)"):
        comp.forward_kernel(np.zeros((4, 3), np.float32), features_last=True)
    with pytest.raises(ValueError, match=r"grad has shape \(5, 2\), but z has shape \(2, 5\)"):
        comp.backward_kernel(np.zeros((2, 5), np.float32), np.zeros((5, 2), np.float32), features_last=True)
