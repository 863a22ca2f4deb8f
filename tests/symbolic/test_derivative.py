"""Symbolic derivatives: PyTorch's values at kinks, finite differences elsewhere."""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from corpus import ACTIVATIONS, LOSSES
from fuzzing import deadline
from heterosymnn import FormulaParsingError, SymbolicJITCompiler
from heterosymnn.symbolic import grammar
from heterosymnn.symbolic.layer import analyze


def compile64(configs, mode="activation"):
    return SymbolicJITCompiler(configs, "CPU_PYTHON", mode=mode, dtype="float64")


def derivative_at(config, z):
    z = np.asarray(z, dtype=np.float64)
    return compile64([config]).backward_kernel(z[None, :], np.ones((1, z.size)))[0]


# -- kinks follow PyTorch ------------------------------------------------------------------

@pytest.mark.parametrize("config, z, expected", [
    ("relu", [0.0, -0.0, -1.0, 1.0], [0.0, 0.0, 0.0, 1.0]),
    ("Max(num, 0)", [0.0, -1.0, 1.0], [0.0, 0.0, 1.0]),
    ("Max(0, num)", [0.0, -1.0, 1.0], [0.0, 0.0, 1.0]),
    ("max(num, 0)", [0.0], [0.0]),
    ("Abs(num)", [0.0, -0.0, -2.0, 2.0], [0.0, 0.0, -1.0, 1.0]),
    ("abs(num)", [0.0], [0.0]),
    ("hard_tanh", [-1.0, 1.0, -2.0, 0.0, 2.0], [0.0, 0.0, 0.0, 1.0, 0.0]),
    ("Heaviside(num)", [-1.0, 0.0, 1.0], [0.0, 0.0, 0.0]),
    ("Heaviside(num, 0)", [-1.0, 0.0, 1.0], [0.0, 0.0, 0.0]),
    ("Heaviside(num - 1, 1)", [0.0, 1.0, 2.0], [0.0, 0.0, 0.0]),
    ("sign(num)", [-1.0, 0.0, 1.0], [0.0, 0.0, 0.0]),
    ("leaky_relu", [0.0, -1.0, 1.0], [0.01, 0.01, 1.0]),
    (("leaky_relu", {"alpha": 0.2}), [0.0, -1.0, 1.0], [0.2, 0.2, 1.0]),
    (("elu", {"alpha": 0.5}), [0.0, -1.0, 1.0], [0.5, 0.5 * np.exp(-1.0), 1.0]),
    ("Heaviside(num)*num", [0.0, -1.0, 1.0], [0.5, 0.0, 1.0]),  # d(x H(x)) = H(x): H(0) = 1/2 as written
    ("Abs(num)**2", [0.0, -3.0], [0.0, -6.0]),
    ("sign(num)*num", [0.0, -2.0, 2.0], [0.0, -1.0, 1.0]),
    # SymPy rewrites this to Min(num, Max(E, pi)); hiding the inner Max before the outer Min
    # made SymPy reject the Max as not comparable (found by the long parser fuzz)
    ("Min(num, Max(e, Min(num, pi)))", [0.0, 3.0, np.pi, 4.0], [1.0, 1.0, 0.0, 0.0]),
])
def test_activation_kinks_follow_pytorch(config, z, expected):
    np.testing.assert_array_equal(derivative_at(config, z), expected)


@pytest.mark.parametrize("config, p, t, expected", [
    ("mae", [1.0, 2.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, -1.0]),
    ("quantile", [1.0, 2.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.5, -0.5]),
    (("quantile", {"tau": 0.9}), [1.0, 2.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.1, -0.9]),
    ("Abs(y_pred)", [0.0, -1.0], [5.0, 5.0], [0.0, -1.0]),
    ("Max(y_pred - y_true, 0)", [1.0, 2.0], [1.0, 1.0], [0.0, 1.0]),
])
def test_loss_kinks_follow_pytorch(config, p, t, expected):
    comp = compile64([config], mode="loss")
    got = comp.backward_kernel(np.array(p), np.array(t))
    np.testing.assert_allclose(got, expected, rtol=1e-14, atol=0)  # exact zeros at the kinks


def test_derivative_of_a_step_is_zero_everywhere_finite():
    z = np.array([-1e300, -5.0, -1e-300, 0.0, 1e-300, 5.0, 1e300])
    for config in ["Heaviside(num)", "Heaviside(num, 1)", "sign(num)", "3*sign(2*num - 1) + Heaviside(-num)"]:
        np.testing.assert_array_equal(derivative_at(config, z), np.zeros_like(z), err_msg=config)


def test_derivatives_contain_only_evaluable_nodes():
    configs = [c for c, _, _ in ACTIVATIONS] + ["Heaviside(num)*sign(num)", "Max(num, 1, -1)*Min(num, 2)"]
    structures = analyze(configs).structures + analyze([c for c, _, _ in LOSSES], "loss").structures
    for structure in structures:
        assert grammar.unsupported_nodes(structure.derivative) == [], structure.derivative
        assert not structure.derivative.has(sp.DiracDelta, sp.Derivative, sp.Subs)


def test_loss_derivative_is_with_respect_to_y_pred():
    comp = compile64(["(y_pred - 3*y_true)**2"], mode="loss")
    got = comp.backward_kernel(np.array([2.0]), np.array([1.0]))
    np.testing.assert_allclose(got, [2 * (2.0 - 3.0)])


def test_an_underivable_formula_fails_at_construction():
    with pytest.raises(FormulaParsingError, match="derivative"):
        compile64(["relu", "(-2)**num"])


# -- finite differences (float64, away from kinks) ---------------------------------------------

ACTIVATION_KINKS = np.array([-1.0, 0.0, 1.0])


def _away_from(values, kinks, margin=1e-3):
    return np.all(np.abs(values[:, None] - kinks[None, :]) > margin, axis=1)


@pytest.fixture(scope="module")
def activation_fd():
    rng = np.random.default_rng(7)
    z = rng.uniform(-3, 3, 400)
    z = z[_away_from(z, ACTIVATION_KINKS)]
    n = len(ACTIVATIONS)
    comp = compile64([c for c, _, _ in ACTIVATIONS])
    h = 1e-6 * np.maximum(1.0, np.abs(z))
    rows = lambda v: np.ascontiguousarray(np.tile(v, (n, 1)))  # noqa: E731
    numeric = (comp.forward_kernel(rows(z + h)) - comp.forward_kernel(rows(z - h))) / (2 * h)
    symbolic = comp.backward_kernel(rows(z), np.ones((n, z.size)))
    return numeric, symbolic


@pytest.mark.parametrize("row", range(len(ACTIVATIONS)), ids=[repr(c[0])[:50] for c in ACTIVATIONS])
def test_activation_derivative_matches_finite_differences(activation_fd, row):
    numeric, symbolic = activation_fd
    np.testing.assert_allclose(symbolic[row], numeric[row], rtol=1e-6, atol=1e-6)


@pytest.fixture(scope="module")
def loss_fd():
    rng = np.random.default_rng(8)
    p, t = rng.uniform(-3, 3, 600), rng.uniform(-3, 3, 600)
    t[::3] = rng.uniform(0, 1, 200)  # bce's natural range too
    p[::3] = rng.uniform(0, 1, 200)
    keep = (_away_from(p - t, np.array([-1.0, -0.5, 0.0, 0.5, 1.0]))  # mae, huber, quantile
            & _away_from(p, np.array([0.0, 1.0])))  # Abs(y_pred), bce's clipping
    p, t = p[keep], t[keep]
    n = len(LOSSES)
    comp = compile64([c for c, _, _ in LOSSES], mode="loss")
    h = 1e-6 * np.maximum(1.0, np.abs(p))
    rows = lambda v: np.ascontiguousarray(np.tile(v, (n, 1)))  # noqa: E731
    numeric = (comp.forward_kernel(rows(p + h), rows(t)) - comp.forward_kernel(rows(p - h), rows(t))) / (2 * h)
    symbolic = comp.backward_kernel(rows(p), rows(t))
    return numeric, symbolic


@pytest.mark.parametrize("row", range(len(LOSSES)), ids=[repr(c[0])[:50] for c in LOSSES])
def test_loss_derivative_matches_finite_differences(loss_fd, row):
    numeric, symbolic = loss_fd
    np.testing.assert_allclose(symbolic[row], numeric[row], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("config", ["sin(num)**2 + cos(3*num)", "exp(-num**2)*log(2 + num)", "erf(num)*erfc(-num)",
                                    "atan(num)*tanh(num)", "asinh(num)/(1 + num**2)", "sqrt(4 + num**2)**3",
                                    "Max(sin(num), cos(num), num/4)", "acos(num/4) + asin(num/5)",
                                    "cosh(num/2) - sinh(num/3)", "log(num**2 + 1, 3)",
                                    ("a*tanh(b*num) + c*num**2", {"a": 1.5, "b": -0.7, "c": 0.1})])
def test_more_derivatives_match_finite_differences(config):
    z = np.linspace(-2.9, 2.9, 59) + 1e-3  # the Max has ties away from these points
    h = 1e-6
    comp = compile64([config])
    numeric = (comp.forward_kernel(z[None] + h) - comp.forward_kernel(z[None] - h)) / (2 * h)
    np.testing.assert_allclose(comp.backward_kernel(z[None], np.ones((1, z.size))), numeric, rtol=1e-6, atol=1e-6)


def test_derivatives_stay_cheap():
    """The derivative is simplified: never much bigger than the formula it comes from."""
    layers = [analyze([c for c, _, _ in ACTIVATIONS]), analyze([c for c, _, _ in LOSSES], "loss")]
    for structure in (s for layer in layers for s in layer.structures):
        assert sp.count_ops(structure.derivative) <= 3 * sp.count_ops(structure.expr) + 8, structure.derivative


# -- formulas SymPy derives slowly -------------------------------------------------------------

def _continued_fraction(depth):
    text = "num"
    for _ in range(depth):
        text = f"1/(num + {text})"
    return text


def test_a_deep_continued_fraction_derives_in_bounded_time():
    """powsimp took 11 s on this derivative (and never shortens one); it is skipped on large ones."""
    config = _continued_fraction(25)
    with deadline(10, config):
        comp = compile64([config])
    z = np.linspace(0.5, 3.0, 11)
    h = 1e-6
    numeric = (comp.forward_kernel(z[None] + h) - comp.forward_kernel(z[None] - h)) / (2 * h)
    np.testing.assert_allclose(comp.backward_kernel(z[None], np.ones((1, z.size))), numeric, rtol=1e-6, atol=1e-9)


def test_max_and_min_of_many_arguments_derive_in_bounded_time_with_pytorch_ties():
    """SymPy rebuilt and re-compared a Max of the other n - 1 arguments for each argument
    (Max of 16 took seconds, of 50 over a minute). The one strictly largest argument (smallest
    for Min) gets the gradient; a tie for first place gets 0, as for Max of two."""
    n = 40
    terms = [f"sin(num + {k})" for k in range(n)]
    with deadline(15, "Max/Min of 40 arguments"):
        comp = compile64([f"Max({', '.join(terms)})", f"Min({', '.join(terms)})"])
    z = np.linspace(-3.0, 3.0, 31) + 1e-3
    values = np.sin(z[None, :] + np.arange(n)[:, None])
    expected = np.stack([np.cos(z + np.argmax(values, axis=0)), np.cos(z + np.argmin(values, axis=0))])
    np.testing.assert_allclose(comp.backward_kernel(np.stack([z, z]), np.ones((2, z.size))), expected, rtol=1e-12)
    tied = compile64(["Max(num, 2*num, 1)", "Min(num, 2*num, -1)"])
    np.testing.assert_array_equal(tied.backward_kernel(np.array([[1.0, 0.5, 3.0], [-1.0, -0.5, -3.0]]),
                                                       np.ones((2, 3))),
                                  [[2.0, 0.0, 2.0], [2.0, 0.0, 2.0]])  # 0.5 and -0.5 tie with the constant
