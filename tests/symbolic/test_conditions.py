"""Conditions that compare a Piecewise: split over its branches, never SymPy's ITE folding."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import sympy as sp

from fuzzing import deadline
from heterosymnn import CompilationWarning, FormulaParsingError, SymbolicJITCompiler
from heterosymnn.symbolic.conditions import fold_condition
from heterosymnn.symbolic.layer import analyze

Z = np.array([-np.inf, -50.0, -2.0, -1.0, -0.5, -0.0, 0.0, 0.25, 0.5, 1.0, 2.0, 50.0, np.inf, np.nan])


def forward(configs, dtype="float64", method="CPU_PYTHON"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompilationWarning)
        comp = SymbolicJITCompiler(configs, method, dtype=dtype)
    z = np.broadcast_to(Z.astype(dtype), (len(configs), Z.size)).copy()
    return comp.forward_kernel(z), comp.backward_kernel(z, np.ones_like(z))


def test_a_split_condition_means_what_np_select_means():
    """(k1 & R(e1)) | (~k1 & k2 & R(e2)) | (~k1 & ~k2 & R(e3)), NaN taking the last branch."""
    x = sp.Symbol("num", real=True)
    inner = sp.Piecewise((x**2, x > 1), (-x, x < -1), (x / 2, True))
    folded = fold_condition(sp.Lt(inner, sp.Rational(1, 2)))
    assert not folded.has(sp.Piecewise) and not folded.has(sp.ITE)
    evaluate = sp.lambdify(x, folded, "numpy")
    with np.errstate(invalid="ignore"):
        inner_values = np.select([Z > 1, Z < -1], [Z**2, -Z], Z / 2)
        np.testing.assert_array_equal(evaluate(Z), inner_values < 0.5)


@pytest.mark.parametrize("outer, inner", [("softplus", "softplus"), ("sigmoid", "softplus"), ("gelu", "gelu"),
                                          ("softsign", "softsign"), ("swish", "mish"), ("mish", "mish")])
def test_nested_named_formulas_equal_their_composition(outer, inner):
    """The stable form of the outer formula tests its argument's sign: the inner formula's
    Piecewise lands in a condition. SymPy folded it into an ITE that no backend evaluates, so
    every nesting below failed to build (found by the long parser fuzz)."""
    with deadline(10, f"{outer}({inner}(num))"):
        nested, nested_grad = forward([f"{outer}({inner}(num))"])
    once, once_grad = forward([inner])
    u = once[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompilationWarning)
        outer_comp = SymbolicJITCompiler([outer], "CPU_PYTHON", dtype="float64")
    expected = outer_comp.forward_kernel(u[None])[0]
    chain = outer_comp.backward_kernel(u[None], once_grad)[0]
    np.testing.assert_allclose(nested[0], expected, rtol=1e-13, equal_nan=True)
    finite = np.isfinite(Z)
    np.testing.assert_allclose(nested_grad[0][finite], chain[finite], rtol=1e-12, atol=1e-300, equal_nan=True)


def test_three_nested_named_formulas_build_in_bounded_time_on_every_backend():
    """mish(mish(mish(num))) took 5 s in SymPy's set logic and still failed."""
    config = "mish(mish(mish(num)))"
    with deadline(15, config):
        python, python_grad = forward([config])
    jit, jit_grad = forward([config], method="CPU_JIT")
    np.testing.assert_allclose(jit, python, rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(jit_grad, python_grad, rtol=1e-11, atol=1e-300, equal_nan=True)


def test_a_constant_condition_sympy_cannot_decide_builds():
    """SymPy's ITE rewrite raised KeyError('pop from an empty set') from deep inside here."""
    values, _ = forward(["Piecewise((num, num < softsign(tanh(709))), (2*num, True))"])
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(values[0], np.where(Z < 0.5, Z, 2 * Z))  # softsign(tanh(709)) rounds to 0.5


@pytest.mark.parametrize("config", [
    ("Piecewise((num, Piecewise((1, a > b), (num, num > 1)) < 1), (0, True))", {"a": 1.0, "b": 2.0}),
    ("log_cosh(Piecewise((1, a > b), (y_pred, y_pred > 1)), y_true)", {"a": 1.0, "b": 2.0}),
])
def test_comparing_a_piecewise_without_a_default_is_a_formula_error_with_the_fix(config):
    mode = "loss" if "y_pred" in config[0] else "activation"
    with pytest.raises(FormulaParsingError, match=r"node 0: a condition compares a Piecewise without a final "
                                                  r"\(value, True\) branch .*give it one"):
        analyze([config], mode)


def test_a_user_piecewise_inside_a_condition_builds_when_it_has_a_default():
    values, _ = forward(["Piecewise((num, Abs(Piecewise((1, num > 0), (num, True))) < 0.75), (0, True))"])
    with np.errstate(invalid="ignore"):
        inner = np.where(Z > 0, 1.0, Z)
        np.testing.assert_array_equal(values[0], np.where(np.abs(inner) < 0.75, Z, 0.0))


def test_a_comparison_of_too_many_branch_combinations_is_a_formula_error_in_bounded_time():
    """Each distinct Piecewise in a comparison multiplies the split's terms by its branches; a
    quantile of a mish and a swish inside a condition ran for minutes (found by the long property
    run). Past MAX_SPLIT_TERMS it is rejected with the fix."""
    config = ("Piecewise((y_pred, quantile(mish(y_pred), swish(y_true), 0.5) < 1 + quantile(mish(y_true), "
              "sigmoid(y_pred), 0.5)), (0, True))")
    with deadline(10, config), pytest.raises(FormulaParsingError, match=r"node 0: a condition compares Piecewise "
                                                                          r"expressions with \d+ combinations of "
                                                                          r"branches \(at most 64 are supported\); "
                                                                          r"move the Piecewise"):
        analyze([config], "loss")
