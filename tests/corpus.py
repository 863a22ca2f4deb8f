"""Formulas with hand-written NumPy references, shared by the backend tests.

Each entry: (config, forward reference, derivative reference) for activations
(functions of z, with the node's constants already applied), or over
(y_pred, y_true) for losses. References are written by hand in NumPy float64,
independently of SymPy, so a parser or derivative bug cannot hide itself.
"""
from __future__ import annotations

import numpy as np
from scipy import special

SQRT2 = np.sqrt(2.0)


def _sigmoid(z):
    return special.expit(z)


def _softplus(z):
    # log(1 + e^z) without overflow: the mathematical value the kernels must give.
    return np.logaddexp(0.0, z)


def _softsign(z):
    # z/(1 + |z|), with its limits +-1 at z = +-inf.
    return np.where(np.isinf(z), np.sign(z), z / (1 + np.abs(z)))


def _at_infinity(z, at_minus_inf, at_plus_inf, value):
    """``value`` with the function's limits written in at z = -inf and +inf."""
    return np.where(z == -np.inf, at_minus_inf, np.where(z == np.inf, at_plus_inf, value))


def _gelu(z):
    # z*Phi(z) with Phi from erfc: no cancellation for z << 0; limits 0 and +inf.
    return _at_infinity(z, 0.0, np.inf, 0.5 * z * special.erfc(-z / SQRT2))


def _gelu_derivative(z):
    return _at_infinity(z, 0.0, 1.0, 0.5 * special.erfc(-z / SQRT2) + z * np.exp(-z * z / 2) / np.sqrt(2 * np.pi))


def _log_cosh(d):
    return np.logaddexp(d, -d) - np.log(2.0)


ACTIVATIONS = [
    ("relu", lambda z: np.maximum(z, 0), lambda z: np.heaviside(z, 0.0)),
    ("Max(0, num)", lambda z: np.maximum(z, 0), lambda z: np.heaviside(z, 0.0)),
    (("leaky_relu", {"alpha": 0.2}), lambda z: np.where(z > 0, z, 0.2 * z), lambda z: np.where(z > 0, 1.0, 0.2) + 0 * z),
    ("leaky_relu", lambda z: np.where(z > 0, z, 0.01 * z), lambda z: np.where(z > 0, 1.0, 0.01) + 0 * z),
    ("elu", lambda z: np.where(z > 0, z, np.expm1(z)), lambda z: np.where(z > 0, 1.0, np.exp(z))),
    ("sigmoid", _sigmoid, lambda z: _sigmoid(z) * (1 - _sigmoid(z))),
    ("tanh", np.tanh, lambda z: 1 - np.tanh(z) ** 2),
    ("swish", lambda z: z * _sigmoid(z), lambda z: _sigmoid(z) + z * _sigmoid(z) * (1 - _sigmoid(z))),
    (("swish", {"beta": 2.0}), lambda z: z * _sigmoid(2 * z),
     lambda z: _sigmoid(2 * z) + 2 * z * _sigmoid(2 * z) * (1 - _sigmoid(2 * z))),
    ("softplus", _softplus, _sigmoid),
    ("gelu", _gelu, _gelu_derivative),
    ("gaussian", lambda z: np.exp(-z * z), lambda z: _at_infinity(z, 0.0, 0.0, -2 * z * np.exp(-z * z))),
    ("softsign", _softsign, lambda z: 1 / (1 + np.abs(z)) ** 2),
    ("hard_tanh", lambda z: np.clip(z, -1, 1), lambda z: ((z > -1) & (z < 1)).astype(float) + 0 * z),
    ("sin", np.sin, np.cos),
    ("identity", lambda z: z, lambda z: np.ones_like(z) + 0 * z),
    (("a*sin(w*num) + b", {"a": 1.5, "w": 30.0, "b": -0.25}), lambda z: 1.5 * np.sin(30 * z) - 0.25,
     lambda z: 45 * np.cos(30 * z)),
    ("Abs(num)", np.abs, np.sign),
    ("num**3 - 2*num", lambda z: z ** 3 - 2 * z, lambda z: 3 * z ** 2 - 2),
    ("exp(-num**2/2)*cos(5*num)", lambda z: np.exp(-z ** 2 / 2) * np.cos(5 * z),
     lambda z: np.exp(-z ** 2 / 2) * (-z * np.cos(5 * z) - 5 * np.sin(5 * z))),
    ("atan(num) + asinh(num)", lambda z: np.arctan(z) + np.arcsinh(z),
     lambda z: 1 / (1 + z * z) + 1 / np.sqrt(1 + z * z)),
    ("sign(num)*num**2", lambda z: np.sign(z) * z ** 2, lambda z: 2 * np.sign(z) * z),
    ("Piecewise((0, num < -1), (num**2, num < 1), (1, True))",
     lambda z: np.select([z < -1, z < 1], [0 * z, z * z], 1.0 + 0 * z),
     lambda z: np.select([z < -1, z < 1], [0 * z, 2 * z], 0.0 * z)),
    ("Heaviside(num)*num", lambda z: np.heaviside(z, 0.5) * z, lambda z: np.heaviside(z, 0.5)),
    ("Min(num, 1) + Max(num, -1)", lambda z: np.minimum(z, 1) + np.maximum(z, -1),
     lambda z: np.heaviside(1 - z, 0) + np.heaviside(z + 1, 0)),
    ("erfc(num) + tan(num/4)", lambda z: special.erfc(z) + np.tan(z / 4),
     lambda z: -2 / np.sqrt(np.pi) * np.exp(-z * z) + 0.25 / np.cos(z / 4) ** 2),
    ("log(1 + num**2)", lambda z: np.log(1 + z * z), lambda z: 2 * z / (1 + z * z)),
    ("sqrt(1 + num**2)", lambda z: np.sqrt(1 + z * z), lambda z: z / np.sqrt(1 + z * z)),
    (("x*k + tau", {"k": 3.0}), lambda z: 3 * z + 2 * np.pi, lambda z: 3.0 + 0 * z),
    (("beta*z + gamma*E + S", {"beta": 2.0, "gamma": 0.5, "E": 3.0, "S": 1.0}), lambda z: 2 * z + 2.5,
     lambda z: 2.0 + 0 * z),
]

LOSSES = [
    ("mse", lambda p, t: (p - t) ** 2, lambda p, t: 2 * (p - t)),
    ("mae", lambda p, t: np.abs(p - t), lambda p, t: np.sign(p - t)),
    ("huber", lambda p, t: np.where(np.abs(p - t) <= 1, 0.5 * (p - t) ** 2, np.abs(p - t) - 0.5),
     lambda p, t: np.where(np.abs(p - t) <= 1, p - t, np.sign(p - t))),
    (("huber", {"delta": 0.5}), lambda p, t: np.where(np.abs(p - t) <= 0.5, 0.5 * (p - t) ** 2, 0.5 * (np.abs(p - t) - 0.25)),
     lambda p, t: np.where(np.abs(p - t) <= 0.5, p - t, 0.5 * np.sign(p - t))),
    ("log_cosh", lambda p, t: _log_cosh(p - t), lambda p, t: np.tanh(p - t)),
    ("quantile", lambda p, t: np.maximum(0.5 * (t - p), -0.5 * (t - p)),
     lambda p, t: np.where(p > t, 0.5, np.where(p < t, -0.5, 0.0))),
    ("bce", lambda p, t: -(t * np.log(np.clip(p, 1e-7, 1 - 1e-7)) + (1 - t) * np.log(1 - np.clip(p, 1e-7, 1 - 1e-7))),
     lambda p, t: np.where((p > 1e-7) & (p < 1 - 1e-7), -t / p + (1 - t) / (1 - p), 0.0)),
    (("c*(y_pred - y_true)**2 + Abs(y_pred)", {"c": 0.5}), lambda p, t: 0.5 * (p - t) ** 2 + np.abs(p),
     lambda p, t: (p - t) + np.sign(p)),
]


# Formulas whose constants are learned: gradients with respect to constants are checked on these
# (against finite differences, so they need no hand-written reference).
WITH_CONSTANTS = [
    ("a*sin(w*num) + b", {"a": 1.5, "w": 3.0, "b": -0.25}),
    ("leaky_relu", {"alpha": 0.2}),
    ("elu", {"alpha": 1.3}),
    ("swish", {"beta": 1.7}),
    "tanh",  # no constants: no entries, and the others' offsets skip it
    ("a*tanh(b*num)", {"a": 0.7, "b": 1.9}),
    ("Max(num, c)", {"c": 0.3}),
    ("k*Abs(num - c)", {"c": 0.2, "k": 1.1}),
    ("Piecewise((a*num, num > c), (num**2, True))", {"a": 2.0, "c": 0.1}),
    ("exp(-(num - m)**2/(2*s**2))", {"m": 0.2, "s": 0.8}),
    ("log1p(exp(k*num))/k", {"k": 2.0}),
    ("p*num**3 + q*num**2 + r*num", {"p": 0.1, "q": -0.4, "r": 1.2}),
    ("hard_tanh(num)*s + sigmoid(t*num)", {"s": 0.5, "t": -1.5}),
]
LOSSES_WITH_CONSTANTS = [("huber", {"delta": 0.7}), ("quantile", {"tau": 0.3}), ("w*(y_pred - y_true)**2", {"w": 2.0})]
