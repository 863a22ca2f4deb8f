"""The constants as one vector, and their gradient from the backward kernels.

``constants_grad`` is checked against central finite differences of the forward
kernel (float64) over a corpus of formulas with constants, on every CPU backend,
and the backends against each other.
"""
from __future__ import annotations

import numpy as np
import pytest

from corpus import LOSSES_WITH_CONSTANTS as LOSSES
from corpus import WITH_CONSTANTS
from heterosymnn import SymbolicJITCompiler

CPU_METHODS = ["CPU_PYTHON", "CPU_JIT"]



def _inputs(rows: int, cols: int = 9, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, cols)), rng.normal(size=(rows, cols))


def _finite_differences(comp: SymbolicJITCompiler, objective, step: float = 1e-6) -> np.ndarray:
    values = comp.constants_vector
    result = np.zeros_like(values)
    for i in range(values.size):
        sums = []
        for sign in (1, -1):
            moved = values.copy()
            moved[i] += sign * step * max(1.0, abs(values[i]))
            comp.set_constants_vector(moved)
            sums.append(objective())
        result[i] = (sums[0] - sums[1]) / (2 * step * max(1.0, abs(values[i])))
    comp.set_constants_vector(values)
    return result


@pytest.mark.parametrize("method", CPU_METHODS)
def test_constants_grad_matches_finite_differences(method):
    comp = SymbolicJITCompiler(WITH_CONSTANTS, method, dtype="float64", strict=True)
    z, g = _inputs(len(WITH_CONSTANTS))
    constants_grad = np.full(len(comp.constant_names), np.nan)
    out = comp.backward_kernel(z, g, constants_grad=constants_grad)
    np.testing.assert_array_equal(out, comp.backward_kernel(z, g))  # the input gradient is unchanged
    expected = _finite_differences(comp, lambda: float(np.sum(comp.forward_kernel(z) * g)))
    np.testing.assert_allclose(constants_grad, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("method", CPU_METHODS)
def test_loss_constants_grad_matches_finite_differences(method):
    y_pred, y_true = _inputs(1, 40, seed=3)
    for config in LOSSES:
        comp = SymbolicJITCompiler([config], method, mode="loss", dtype="float64", strict=True)
        constants_grad = np.zeros(len(comp.constant_names))
        comp.backward_kernel(y_pred[0], y_true[0], constants_grad=constants_grad)
        expected = _finite_differences(comp, lambda: float(np.sum(comp.forward_kernel(y_pred[0], y_true[0]))))
        np.testing.assert_allclose(constants_grad, expected, rtol=1e-6, atol=1e-7, err_msg=str(config))
    # One loss per output row.
    rows = SymbolicJITCompiler(LOSSES, method, mode="loss", dtype="float64", strict=True)
    y_pred, y_true = _inputs(len(LOSSES), 11, seed=4)
    constants_grad = np.zeros(len(rows.constant_names))
    rows.backward_kernel(y_pred, y_true, constants_grad=constants_grad)
    expected = _finite_differences(rows, lambda: float(np.sum(rows.forward_kernel(y_pred, y_true))))
    np.testing.assert_allclose(constants_grad, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("method", CPU_METHODS)
def test_float32_terms_are_summed_in_float64_deterministically(method):
    single = SymbolicJITCompiler(WITH_CONSTANTS, method, dtype="float32", strict=True)
    double = SymbolicJITCompiler(WITH_CONSTANTS, "CPU_PYTHON", dtype="float64")
    z, g = _inputs(len(WITH_CONSTANTS), 5000, seed=5)
    first, second, reference = (np.zeros(len(single.constant_names)) for _ in range(3))
    single.backward_kernel(z.astype(np.float32), g.astype(np.float32), constants_grad=first)
    single.backward_kernel(z.astype(np.float32), g.astype(np.float32), constants_grad=second)
    double.backward_kernel(z, g, constants_grad=reference)
    assert first.tobytes() == second.tobytes()
    np.testing.assert_allclose(first, reference, rtol=2e-4, atol=2e-3)


@pytest.mark.parametrize("method", CPU_METHODS)
def test_one_dimensional_and_empty_batches(method):
    comp = SymbolicJITCompiler(WITH_CONSTANTS, method, dtype="float64", strict=True)
    z, g = _inputs(len(WITH_CONSTANTS), 1, seed=6)
    as_2d, as_1d = np.zeros(len(comp.constant_names)), np.zeros(len(comp.constant_names))
    comp.backward_kernel(z, g, constants_grad=as_2d)
    comp.backward_kernel(z[:, 0], g[:, 0], constants_grad=as_1d)
    np.testing.assert_array_equal(as_1d, as_2d)
    empty = np.full(len(comp.constant_names), 7.0)
    comp.backward_kernel(np.zeros((len(WITH_CONSTANTS), 0)), np.zeros((len(WITH_CONSTANTS), 0)),
                         constants_grad=empty)
    assert not empty.any()


def test_constant_names_vector_and_setting_them_all():
    comp = SymbolicJITCompiler([("a*sin(w*num) + b", {"a": 1.5, "w": 3.0, "b": -0.25}), "tanh",
                                ("leaky_relu", {"alpha": 0.2})], "CPU_PYTHON")
    assert comp.constant_names == [(0, "a"), (0, "w"), (0, "b"), (2, "alpha")]
    vector = comp.constants_vector
    assert vector.dtype == np.float64 and vector.tolist() == [1.5, 3.0, -0.25, 0.2]
    vector[0] = 99.0  # a copy
    assert comp.constants[0]["a"] == 1.5
    comp.set_constants_vector([2.0, 1.0, 0.5, 0.3])
    assert comp.constants == [{"a": 2.0, "w": 1.0, "b": 0.5}, {}, {"alpha": 0.3}]
    z = np.linspace(-1, 1, 3, dtype=np.float32)
    np.testing.assert_allclose(comp.forward_kernel(z), [2 * np.sin(-1) + 0.5, 0.0, 1.0], rtol=1e-6)


@pytest.mark.parametrize("values, error, message", [
    ([1.0, 2.0], ValueError, r"values has shape \(2,\), but this layer has 4 constants"),
    ([1.0, np.nan, 0.0, 0.0], ValueError, r"values\[1\] \(node 0, constant 'w'\) is nan"),
    ([1.0, 1.0, np.inf, 0.0], ValueError, r"node 0, constant 'b'\) is inf"),
    ("1234", TypeError, "must be a 1-D sequence of 4 numbers"),
    (3.0, TypeError, "must be a 1-D sequence of 4 numbers"),
    (["a", "b", "c", "d"], TypeError, "must be real numbers"),
    ([[1.0, 2.0, 3.0, 4.0]], ValueError, r"expected shape \(4,\)"),
])
def test_bad_constants_vectors_are_clear_errors(values, error, message):
    comp = SymbolicJITCompiler([("a*sin(w*num) + b", {"a": 1.5, "w": 3.0, "b": -0.25}),
                                ("leaky_relu", {"alpha": 0.2})], "CPU_PYTHON")
    before = comp.constants_vector
    with pytest.raises(error, match=message):
        comp.set_constants_vector(values)
    np.testing.assert_array_equal(comp.constants_vector, before)


@pytest.mark.parametrize("constants_grad, error, message", [
    (np.zeros(3, np.float32), TypeError, "constants_grad has dtype float32; it must be float64"),
    (np.zeros(5), ValueError, r"constants_grad has shape \(5,\), but this layer has 3 constants"),
    (np.zeros((3, 1)), ValueError, r"expected shape \(3,\)"),
    ([0.0, 0.0, 0.0], TypeError, "constants_grad must be a NumPy ndarray"),
    (np.zeros(6)[::2], ValueError, "writeable, contiguous"),
])
def test_bad_constants_grad_arrays_are_clear_errors(constants_grad, error, message):
    comp = SymbolicJITCompiler([("a*sin(w*num) + b", {"a": 1.5, "w": 3.0, "b": -0.25})], "CPU_PYTHON")
    z = np.ones((1, 4), np.float32)
    with pytest.raises(error, match=message):
        comp.backward_kernel(z, z, constants_grad=constants_grad)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cpu_jit_equals_cpu_python_within_rounding(dtype):
    """Both sum the same dtype terms in float64 (in other orders, with other math libraries):
    every constant of the corpus, activations and losses, agrees within rounding."""
    from corpus import ACTIVATIONS, LOSSES as LOSS_CORPUS

    activations = list(WITH_CONSTANTS) + [c for c, _, _ in ACTIVATIONS if isinstance(c, tuple)]
    losses = list(LOSSES) + [c for c, _, _ in LOSS_CORPUS if isinstance(c, tuple)]
    rtol, atol = (1e-11, 1e-11) if dtype == "float64" else (2e-5, 2e-5)
    for mode, configs in (("activation", activations), ("loss", losses)):
        jit = SymbolicJITCompiler(configs, "CPU_JIT", mode=mode, dtype=dtype, strict=True)
        ref = SymbolicJITCompiler(configs, "CPU_PYTHON", mode=mode, dtype=dtype)
        a, b = (x.astype(dtype) for x in _inputs(len(configs), 1000, seed=7))
        if mode == "loss":
            b = np.abs(b) % 1  # y_true in [0, 1) (bce)
            a = np.clip(np.abs(a) % 1, 1e-3, 1 - 1e-3)
        a[:, 1:3] = [0.0, -0.0]  # kinks
        a[0, 0] = np.nan  # NaN: the node's sums are NaN on both
        got, want = np.zeros(len(jit.constant_names)), np.zeros(len(jit.constant_names))
        out = jit.backward_kernel(a, b, constants_grad=got)
        ref.backward_kernel(a, b, constants_grad=want)
        np.testing.assert_array_equal(out, jit.backward_kernel(a, b))
        finite = np.isfinite(want)
        assert finite.sum() > len(want) // 2
        np.testing.assert_array_equal(finite, np.isfinite(got), err_msg=mode)
        # A sum can cancel: its rounding error is relative to the size of the sums, not its own.
        np.testing.assert_allclose(got[finite], want[finite], rtol=rtol,
                                   atol=atol * max(1.0, np.abs(want[finite]).max()), err_msg=mode)
