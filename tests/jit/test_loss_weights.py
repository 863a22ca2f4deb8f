"""Loss backward weighted by the upstream gradient: ``backward_kernel(y_pred, y_true, grad=w)``.

``out`` must be ``w * dL/dy_pred`` and ``constants_grad`` the sum of ``w * dL/dc``, from one
call, on every CPU backend, nodes first and features last, for one loss over every element
and for one loss per node; checked against central finite differences of ``sum(w * L)``
(float64), against the unweighted kernel times ``w`` (bit for bit) and CPU_JIT against
CPU_PYTHON. GPU_CUDA's are in tests/backends/test_cuda_training.py.
"""
from __future__ import annotations

import numpy as np
import pytest

from corpus import LOSSES_WITH_CONSTANTS as LOSSES
from heterosymnn import SymbolicJITCompiler

CPU_METHODS = ["CPU_PYTHON", "CPU_JIT"]


def _triple(shape, seed: int, dtype: str = "float64"):
    """y_pred in (0.05, 0.95) (bce's domain), y_true in [0, 1), weights of both signs and a zero."""
    rng = np.random.default_rng(seed)
    y_pred = rng.uniform(0.05, 0.95, size=shape).astype(dtype)
    y_true = rng.uniform(0.0, 1.0, size=shape).astype(dtype)
    weights = rng.normal(size=shape).astype(dtype)
    weights.reshape(-1)[0] = 0.0
    return y_pred, y_true, weights


def _finite_differences(comp: SymbolicJITCompiler, objective, step: float = 1e-6) -> np.ndarray:
    values = comp.constants_vector
    result = np.zeros_like(values)
    for i in range(values.size):
        h = step * max(1.0, abs(values[i]))
        sums = []
        for sign in (1, -1):
            moved = values.copy()
            moved[i] += sign * h
            comp.set_constants_vector(moved)
            sums.append(objective())
        result[i] = (sums[0] - sums[1]) / (2 * h)
    comp.set_constants_vector(values)
    return result


def _check_weighted(comp, y_pred, y_true, w, features_last: bool = False) -> np.ndarray:
    """The weighted call against finite differences and the unweighted call; its constants_grad."""
    layout = {"features_last": True} if features_last else {}
    got = np.full(len(comp.constant_names), np.nan)
    out = comp.backward_kernel(y_pred, y_true, grad=w, constants_grad=got, **layout)
    np.testing.assert_array_equal(out, w * comp.backward_kernel(y_pred, y_true, **layout))
    np.testing.assert_array_equal(out, comp.backward_kernel(y_pred, y_true, grad=w, **layout))
    expected = _finite_differences(
        comp, lambda: float(np.sum(w * comp.forward_kernel(y_pred, y_true, **layout))))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    return got


@pytest.mark.parametrize("method", CPU_METHODS)
def test_one_loss_for_every_element(method):
    y_pred, y_true, w = _triple((3, 5, 4), seed=1)  # any shape
    for config in LOSSES:
        comp = SymbolicJITCompiler([config], method, mode="loss", dtype="float64", strict=True)
        _check_weighted(comp, y_pred, y_true, w)


@pytest.mark.parametrize("method", CPU_METHODS)
def test_one_loss_per_node_both_layouts(method):
    comp = SymbolicJITCompiler(LOSSES, method, mode="loss", dtype="float64", strict=True)
    y_pred, y_true, w = _triple((len(LOSSES), 300), seed=2)  # several spans, a short last one
    nodes_first = _check_weighted(comp, y_pred, y_true, w)
    features_last = _check_weighted(comp, y_pred.T.copy(), y_true.T.copy(), w.T.copy(), features_last=True)
    # The same terms summed per span of each node's samples in both layouts.
    np.testing.assert_allclose(features_last, nodes_first, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("features_last", [False, True], ids=["nodes-first", "features-last"])
def test_cpu_jit_equals_cpu_python_within_rounding(dtype, features_last):
    from corpus import LOSSES as LOSS_CORPUS

    configs = list(LOSSES) + [c for c, _, _ in LOSS_CORPUS if isinstance(c, tuple)]
    jit = SymbolicJITCompiler(configs, "CPU_JIT", mode="loss", dtype=dtype, strict=True)
    ref = SymbolicJITCompiler(configs, "CPU_PYTHON", mode="loss", dtype=dtype)
    y_pred, y_true, w = _triple((len(configs), 700), seed=3, dtype=dtype)
    if features_last:
        y_pred, y_true, w = (x.T.copy() for x in (y_pred, y_true, w))
    layout = {"features_last": True} if features_last else {}
    got, want = np.zeros(len(jit.constant_names)), np.zeros(len(jit.constant_names))
    out = jit.backward_kernel(y_pred, y_true, grad=w, constants_grad=got, **layout)
    expected = ref.backward_kernel(y_pred, y_true, grad=w, constants_grad=want, **layout)
    rtol = 1e-12 if dtype == "float64" else 2e-5
    np.testing.assert_allclose(out, expected, rtol=rtol, atol=rtol)
    scale = max(1.0, np.abs(want).max())
    np.testing.assert_allclose(got, want, rtol=rtol * 10, atol=rtol * 10 * scale)


@pytest.mark.parametrize("method", CPU_METHODS)
def test_weights_in_place_non_contiguous_and_empty(method):
    comp = SymbolicJITCompiler(LOSSES[:2], method, mode="loss", dtype="float64", strict=True)
    y_pred, y_true, w = _triple((2, 40), seed=4)
    expected = comp.backward_kernel(y_pred, y_true, grad=w)
    # Weights as a strided view (copied) and the result written over the weights themselves.
    wide = np.zeros((2, 80))
    wide[:, ::2] = w
    np.testing.assert_array_equal(comp.backward_kernel(y_pred, y_true, grad=wide[:, ::2]), expected)
    in_place = w.copy()
    assert comp.backward_kernel(y_pred, y_true, in_place, grad=in_place) is in_place
    np.testing.assert_array_equal(in_place, expected)
    # ``out`` a shifted view of the weights' memory: the weights are read before anything is written.
    buffer = np.concatenate([w.reshape(-1), [0.0]])
    shifted_w, shifted_out = buffer[:-1].reshape(2, 40), buffer[1:].reshape(2, 40)
    np.testing.assert_array_equal(comp.backward_kernel(y_pred, y_true, shifted_out, grad=shifted_w), expected)
    # An empty batch: nothing to weigh, every constant's sum is 0.
    summed = np.full(len(comp.constant_names), np.nan)
    empty = np.zeros((2, 0))
    assert comp.backward_kernel(empty, empty, grad=empty, constants_grad=summed).shape == (2, 0)
    np.testing.assert_array_equal(summed, 0.0)


@pytest.mark.parametrize("grad, error, message", [
    (np.ones((2, 5)), ValueError, r"grad has shape \(2, 5\), but y_pred has shape \(2, 4\).*broadcast_to"),
    (np.ones(4), ValueError, r"grad has shape \(4,\).*no broadcasting"),
    (np.ones((2, 4), np.float32), TypeError, r"grad has dtype float32, but this compiler was built for float64"),
    ([[1.0] * 4] * 2, TypeError, "grad must be a NumPy ndarray"),
])
def test_bad_weights_are_clear_errors(grad, error, message):
    comp = SymbolicJITCompiler(["mse", ("huber", {"delta": 0.5})], "CPU_PYTHON", mode="loss", dtype="float64")
    y = np.zeros((2, 4))
    with pytest.raises(error, match=message):
        comp.backward_kernel(y, y, grad=grad)
