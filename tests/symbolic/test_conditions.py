"""Conditions that compare a Piecewise: split over its branches, never SymPy's ITE folding."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import sympy as sp

from fuzzing import deadline
from heterosymnn import CompilationWarning, FormulaParsingError, SymbolicJITCompiler
from heterosymnn.symbolic.conditions import fold_condition, piecewise
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


def test_branches_that_become_equal_merge_in_bounded_time_with_their_meaning():
    """Slot numbering views a and b alike, and differentiation turns both constant branches
    into 0: SymPy merged the equal neighbours through CNF of the split conditions, which did
    not finish. Merged with a plain Or, the layer builds and keeps np.select's meaning."""
    config = ("Piecewise((a, mish(num) > 1), (b, mish(num) < swish(num)), (num, True))", {"a": 3.0, "b": -2.0})
    with deadline(10, config):
        python, python_grad = forward([config])
    jit, jit_grad = forward([config], method="CPU_JIT")
    with np.errstate(all="ignore"):
        mish = Z * np.tanh(np.logaddexp(0.0, Z))
        swish = Z / (1 + np.exp(-Z))
        conditions = [mish > 1, mish < swish]
        np.testing.assert_allclose(python[0], np.select(conditions, [3.0, -2.0], Z), rtol=1e-15, equal_nan=True)
        np.testing.assert_array_equal(python_grad[0], np.select(conditions, [0.0, 0.0], 1.0))
    np.testing.assert_array_equal(jit, python)
    np.testing.assert_array_equal(jit_grad, python_grad)


def test_merging_equal_neighbours_keeps_the_first_true_branch():
    x = sp.Symbol("num", real=True)
    built = piecewise([(0, x > 2), (0, x < -1), (x, x > 0), (x, True)])
    assert built.args == ((0, (x > 2) | (x < -1)), (x, True))
    derivative = sp.diff(piecewise([(x**2, x > 2), (x**3, x < -1), (x, True)]), x)
    assert derivative.args == ((2 * x, x > 2), (3 * x**2, x < -1), (1, True))
    assert sp.diff(piecewise([(1, x > 2), (2, x < -1), (x, True)]), x).args == ((0, (x > 2) | (x < -1)), (1, True))


def test_a_loss_whose_derivative_merges_large_split_conditions_builds_in_bounded_time():
    """The long finite-difference property run (seed 777) hung for hours in SymPy's CNF on
    this formula's derivative: its second and third branches are constants whose conditions
    split mish, swish, selu and a nested Piecewise."""
    config = (
        "Piecewise((abs((λ)**(E)), (sin((1e30)**(sin(beta))) <= -(min(gamma, y_true))) & (log(-(-3.75), 0.5) "
        "== (y_pred)**((1/3)))), (Heaviside((log(E, 10)) + (sin(3)), 0.5), (Piecewise(((7)**(y_pred), (-1 < "
        "(E)**(-3.75) <= 1) & (-0.5 < selu(y_true) <= 2)), ((e) * (a), True)) >= 1e30) & (-1 < ((-(y_pred))**1)"
        "**1.5 <= 2)), (atan((0.5)**4), (Heaviside(-(I), 0.5) < quantile(mish(y_pred), swish((E)**-4), 1e-30)) "
        "and (log(y_true, 2) == ((2.5) / (y_pred)) - (Max(pi, λ)))), (-(Piecewise((y_true, (0 < y_true <= 2) | "
        "(-0.5 < b <= 0.5)), (a, -0.5 < Ω <= 2), (w, True))), True))",
        {"E": 0.5, "I": -0.0, "a": -2.5, "b": 0.0, "beta": -1e-30, "e": -9.08, "gamma": -2.71, "pi": 8.66,
         "w": 1.0, "Ω": -1e-30, "λ": 10.0})
    with deadline(60, config):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CompilationWarning)
            comp = SymbolicJITCompiler([config], "CPU_PYTHON", dtype="float64", mode="loss")
    y_pred = np.array([[-3.0, -0.5, 0.5, 1.0, 3.0]])
    y_true = np.array([[0.5, 1.0, 3.0, -1.0, 1.5]])
    # y_true in (0, 2] (b = 0 makes the middle test true anyway) gives -y_true, else the constant 3rd branch
    np.testing.assert_array_equal(comp.forward_kernel(y_pred, y_true), -y_true)
    np.testing.assert_array_equal(comp.backward_kernel(y_pred, y_true), np.zeros_like(y_pred))
