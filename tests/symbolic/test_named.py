"""Named formulas: as whole configs, called inside formulas, with defaults the dict overrides."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import special

from heterosymnn import FormulaParsingError, SymbolicJITCompiler
from heterosymnn.symbolic.layer import analyze
from heterosymnn.symbolic.named import NAMED

SELU_SCALE = 1.0507009873554804934193349852946
SELU_ALPHA = 1.6732632423543772848170429916717


def _sig(z):
    return 1 / (1 + np.exp(-z))


def _softplus(z):
    return np.log1p(np.exp(z))


# Hand-written references with the default constants.
ACTIVATION_REFS = {
    "relu": lambda z: np.maximum(z, 0),
    "leaky_relu": lambda z: np.where(z > 0, z, 0.01 * z),
    "elu": lambda z: np.where(z > 0, z, np.expm1(z)),
    "selu": lambda z: SELU_SCALE * np.where(z > 0, z, SELU_ALPHA * np.expm1(z)),
    "sigmoid": _sig,
    "tanh": np.tanh,
    "swish": lambda z: z * _sig(z),
    "silu": lambda z: z * _sig(z),
    "softplus": _softplus,
    "mish": lambda z: z * np.tanh(_softplus(z)),
    "gelu": lambda z: 0.5 * z * (1 + special.erf(z / np.sqrt(2))),
    "gaussian": lambda z: np.exp(-z * z),
    "softsign": lambda z: z / (1 + np.abs(z)),
    "hard_tanh": lambda z: np.clip(z, -1, 1),
    "sin": np.sin,
    "linear": lambda z: z,
    "identity": lambda z: z,
}
_EPS = 1e-7
LOSS_REFS = {
    "mse": lambda p, t: (p - t) ** 2,
    "mae": lambda p, t: np.abs(p - t),
    "huber": lambda p, t: np.where(np.abs(p - t) <= 1, 0.5 * (p - t) ** 2, np.abs(p - t) - 0.5),
    "log_cosh": lambda p, t: np.log(np.cosh(p - t)),
    "bce": lambda p, t: -(t * np.log(np.clip(p, _EPS, 1 - _EPS)) + (1 - t) * np.log(1 - np.clip(p, _EPS, 1 - _EPS))),
    "quantile": lambda p, t: np.maximum(0.5 * (t - p), -0.5 * (t - p)),
}

Z = np.linspace(-4, 4, 81)
P = np.array([-2.0, -0.3, 0.0, 1e-8, 0.2, 0.5, 0.9, 1.0, 1.7, 3.0])
T = np.array([0.0, 1.0, 0.3, 0.0, 1.0, 0.5, 0.0, 1.0, -1.0, 0.4])


def compile64(configs, mode="activation"):
    return SymbolicJITCompiler(configs, "CPU_PYTHON", mode=mode, dtype="float64")


def test_every_named_formula_has_a_reference_here():
    assert set(ACTIVATION_REFS) | set(LOSS_REFS) == set(NAMED)
    assert {n for n, f in NAMED.items() if f.kind == "activation"} == set(ACTIVATION_REFS)


@pytest.fixture(scope="module")
def activation_layer():
    """Each activation three ways: whole config, called on num, called on an expression."""
    names = list(ACTIVATION_REFS)
    configs = names + [f"{n}(num)" for n in names] + [f"{n}(2*num - 1)" for n in names]
    comp = compile64(configs)
    return names, comp.forward_kernel(np.ascontiguousarray(np.tile(Z, (len(configs), 1))))


@pytest.mark.parametrize("index", range(len(ACTIVATION_REFS)), ids=list(ACTIVATION_REFS))
def test_named_activation_as_config_and_as_call(activation_layer, index):
    names, out = activation_layer
    reference = ACTIVATION_REFS[names[index]]
    n = len(names)
    np.testing.assert_allclose(out[index], reference(Z), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(out[n + index], reference(Z), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(out[2 * n + index], reference(2 * Z - 1), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", list(LOSS_REFS))
def test_named_loss_as_config_and_as_call(name):
    reference = LOSS_REFS[name]
    configs = [name, f"{name}(y_pred, y_true)", f"{name}(y_true, y_pred)", f"{name}(y_pred/2, y_true)"]
    comp = compile64(configs, mode="loss")
    p, t = np.tile(P, (4, 1)), np.tile(T, (4, 1))
    out = comp.forward_kernel(p, t)
    for row, expected in enumerate([reference(P, T), reference(P, T), reference(T, P), reference(P / 2, T)]):
        np.testing.assert_allclose(out[row], expected, rtol=1e-12, atol=1e-15, err_msg=configs[row])


def test_named_formula_combined_with_other_terms():
    comp = compile64(["relu(num) + 0.1*sin(num)", "sigmoid(num)*tanh(num) - gaussian(num/2)"])
    out = comp.forward_kernel(np.tile(Z, (2, 1)))
    np.testing.assert_allclose(out[0], np.maximum(Z, 0) + 0.1 * np.sin(Z), rtol=1e-12)
    np.testing.assert_allclose(out[1], _sig(Z) * np.tanh(Z) - np.exp(-Z * Z / 4), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("config, constants", [
    ("leaky_relu", {"alpha": 0.01}),
    ("elu", {"alpha": 1.0}),
    ("swish", {"beta": 1.0}),
    ("relu", {}),
    ("selu", {}),
])
def test_activation_defaults_are_node_constants(config, constants):
    assert compile64([config]).constants == [constants]


@pytest.mark.parametrize("config, constants", [("huber", {"delta": 1.0}), ("quantile", {"tau": 0.5}),
                                               ("mse", {}), ("bce", {})])
def test_loss_defaults_are_node_constants(config, constants):
    assert compile64([config], mode="loss").constants == [constants]


def test_default_values_act_as_documented():
    comp = compile64(["leaky_relu", "elu", "swish"])
    z = np.array([-2.0, -0.5, 0.5])
    out = comp.forward_kernel(np.tile(z, (3, 1)))
    np.testing.assert_allclose(out[0], np.where(z > 0, z, 0.01 * z), rtol=1e-15)
    np.testing.assert_allclose(out[1], np.where(z > 0, z, np.expm1(z)), rtol=1e-14)
    np.testing.assert_allclose(out[2], z * _sig(z), rtol=1e-14)
    losses = compile64(["huber", "quantile"], mode="loss")
    p, t = np.array([0.5, 3.0, -2.0]), np.zeros(3)
    out = losses.forward_kernel(np.tile(p, (2, 1)), np.tile(t, (2, 1)))
    np.testing.assert_allclose(out[0], [0.125, 2.5, 1.5], rtol=1e-15)  # delta = 1
    np.testing.assert_allclose(out[1], [0.25, 1.5, 1.0], rtol=1e-15)  # tau = 0.5


def test_dict_overrides_defaults():
    comp = compile64([("leaky_relu", {"alpha": 0.3}), ("elu", {"alpha": 2.0}), ("swish", {"beta": 3.0})])
    z = np.array([-2.0, -0.5, 0.5])
    out = comp.forward_kernel(np.tile(z, (3, 1)))
    np.testing.assert_allclose(out[0], np.where(z > 0, z, 0.3 * z), rtol=1e-15)
    np.testing.assert_allclose(out[1], np.where(z > 0, z, 2 * np.expm1(z)), rtol=1e-14)
    np.testing.assert_allclose(out[2], z * _sig(3 * z), rtol=1e-14)
    assert comp.constants == [{"alpha": 0.3}, {"alpha": 2.0}, {"beta": 3.0}]
    losses = compile64([("huber", {"delta": 0.5}), ("quantile", {"tau": 0.9})], mode="loss")
    p, t = np.array([0.25, 3.0, -2.0]), np.zeros(3)
    out = losses.forward_kernel(np.tile(p, (2, 1)), np.tile(t, (2, 1)))
    np.testing.assert_allclose(out[0], [0.03125, 0.5 * (3 - 0.25), 0.5 * (2 - 0.25)], rtol=1e-15)
    np.testing.assert_allclose(out[1], [0.1 * 0.25, 0.1 * 3, 0.9 * 2], rtol=1e-14)


def test_positional_call_arguments_bind_constants():
    comp = compile64(["leaky_relu(num, 0.3)", "elu(num, 0.5)", "swish(num, 2)"])
    z = np.array([-2.0, 0.5])
    out = comp.forward_kernel(np.tile(z, (3, 1)))
    np.testing.assert_allclose(out[0], [-0.6, 0.5], rtol=1e-15)
    np.testing.assert_allclose(out[1], [0.5 * np.expm1(-2), 0.5], rtol=1e-14)
    np.testing.assert_allclose(out[2], z * _sig(2 * z), rtol=1e-14)
    # a literal argument is part of the formula: nothing is left to set
    assert comp.constants == [{}, {}, {}]
    losses = compile64(["huber(y_pred, y_true, 2.0)", "quantile(y_pred, y_true, 0.1)"], mode="loss")
    out = losses.forward_kernel(np.array([[3.0], [-2.0]]), np.zeros((2, 1)))
    np.testing.assert_allclose(out[:, 0], [2 * (3 - 1), 0.1 * 2], rtol=1e-15)


def test_constant_as_call_argument_and_dict_override_inside_formulas():
    comp = compile64([("leaky_relu(num, k)", {"k": 0.2}), ("relu(num) + leaky_relu(num)", {"alpha": 0.5}),
                      "relu(num) + leaky_relu(num)"])
    z = np.array([-2.0, 1.0])
    out = comp.forward_kernel(np.tile(z, (3, 1)))
    np.testing.assert_allclose(out[0], [-0.4, 1.0], rtol=1e-15)
    np.testing.assert_allclose(out[1], [-1.0, 2.0], rtol=1e-15)
    np.testing.assert_allclose(out[2], [-0.02, 2.0], rtol=1e-15)
    assert comp.constants == [{"k": 0.2}, {"alpha": 0.5}, {"alpha": 0.01}]


def test_named_default_can_be_changed_with_set_constants():
    comp = compile64(["leaky_relu", "leaky_relu"])
    comp.set_constants(1, alpha=0.25)
    out = comp.forward_kernel(np.array([[-4.0], [-4.0]]))
    np.testing.assert_allclose(out[:, 0], [-0.04, -1.0], rtol=1e-15)


def test_two_named_formulas_with_different_defaults_for_one_name_need_a_value():
    with pytest.raises(FormulaParsingError, match="alpha"):
        compile64(["elu(num) + leaky_relu(num)"])
    comp = compile64([("elu(num) + leaky_relu(num)", {"alpha": 0.5})])
    np.testing.assert_allclose(comp.forward_kernel(np.array([-1.0])), [0.5 * np.expm1(-1) - 0.5], rtol=1e-14)


@pytest.mark.parametrize("name", [n for n, f in NAMED.items() if f.kind == "loss"])
def test_loss_name_in_activation_mode_is_a_clear_error(name):
    with pytest.raises(FormulaParsingError, match=f"'{name}' is a named loss formula.*mode='loss'"):
        compile64([name])


@pytest.mark.parametrize("name", [n for n, f in NAMED.items() if f.kind == "activation"])
def test_activation_name_in_loss_mode_is_a_clear_error(name):
    with pytest.raises(FormulaParsingError, match=f"'{name}' is a named activation formula.*mode='activation'"):
        compile64([name], mode="loss")


@pytest.mark.parametrize("formula, message", [
    ("leaky_relu(num, 0.1, 0.2)", "leaky_relu takes 1 to 2 argument"),
    ("relu()", "relu takes 1 argument"),
    ("relu(num, 1)", "relu takes 1 argument"),
    ("relu + 1", "'relu' is a function"),
])
def test_wrong_use_of_named_formula(formula, message):
    with pytest.raises(FormulaParsingError, match=message.replace("(", r"\(")):
        compile64([formula])


def test_named_config_may_have_surrounding_spaces():
    comp = compile64(["  relu  "])
    np.testing.assert_allclose(comp.forward_kernel(np.array([[-1.0, 2.0]])), [[0.0, 2.0]])


def test_two_named_formulas_with_different_defaults_for_one_constant_need_a_value():
    """leaky_relu's alpha defaults to 0.01, elu's to 1: which one a shared alpha means is
    the user's call, so the node must give it; an agreeing pair needs nothing."""
    with pytest.raises(FormulaParsingError, match="leaky_relu and elu both use the constant 'alpha' with "
                                                  "different defaults; give 'alpha' a value"):
        analyze(["leaky_relu(num) + elu(num)"])
    layer = analyze([("leaky_relu(num) + elu(num)", {"alpha": 0.5})])
    assert layer.plan.node_values == ((0.5,),)
    assert analyze(["swish(num) + swish(2*num)"]).plan.node_values == ((1.0,),)
