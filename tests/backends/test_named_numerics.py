"""Numerics audit of the named formulas: finite wherever the mathematical value is, and accurate.

Every named formula, forward and backward, on CPU_PYTHON and CPU_JIT, float32 and float64, is
compared with its textbook definition evaluated by mpmath at 60 digits (no overflow, no
cancellation), at ordinary points, kinks, tiny and huge inputs, and inputs where a naive
``exp`` overflows. The reference value is rounded to the kernel's dtype: where that is finite
the kernel must be finite and within a few ulps; where it overflows the dtype the kernel must
give the same infinity. Kinks follow the library's conventions (relu'(0) = 0, sign(0) = 0).

At +-inf inputs the values are pinned separately (:data:`AT_INFINITY`): functions of the form
``x*g(x)`` with ``g -> 0`` (swish, silu, mish, gelu) give NaN there, as ``inf*0`` does in
NumPy and PyTorch; everything else gives its limit.
"""
from __future__ import annotations

import functools

import mpmath as mp
import numpy as np
import pytest

from heterosymnn import SymbolicJITCompiler
from heterosymnn.symbolic.named import NAMED

mp.mp.dps = 60
SELU_SCALE = mp.mpf("1.0507009873554804934193349852946")
SELU_ALPHA = mp.mpf("1.6732632423543772848170429916717")
BCE_EPS = mp.mpf("1e-7")


# The references are exact identities of the textbook definitions, chosen so that 60 digits
# suffice at every test point (1 - sigmoid(700) would need 300 digits; sigmoid(-700) does not).
def _sigmoid(x):
    return 1 / (1 + mp.exp(-x))


def _sigmoid_derivative(x):  # s(x)*(1 - s(x))
    return _sigmoid(x) * _sigmoid(-x)


def _softplus(x):  # log(1 + e^x)
    return mp.log1p(mp.exp(x))


def _swish_derivative(x):
    return _sigmoid(x) + x * _sigmoid_derivative(x)


def _gelu(x):  # x*Phi(x); beyond |x| = 1e6 it is max(x, 0) to within e^-5e11 (mpmath's erfc gives up)
    return x * mp.erfc(-x / mp.sqrt(2)) / 2 if abs(x) < 1e6 else max(x, 0)


def _gelu_derivative(x):
    if abs(x) >= 1e6:
        return _step(x)
    return mp.erfc(-x / mp.sqrt(2)) / 2 + x * mp.exp(-x * x / 2) / mp.sqrt(2 * mp.pi)


def _log_cosh(d):  # log(cosh(d)); cosh(d) - 1 = 2 sinh(d/2)^2 for small |d|
    return mp.log1p(2 * mp.sinh(d / 2) ** 2) if abs(d) < 1 else mp.log(mp.cosh(d))


def _step(x):  # derivative of max(x, 0) with the library's convention at 0
    return mp.mpf(1) if x > 0 else mp.mpf(0)


def _sign(x):
    return mp.mpf(mp.sign(x))


# name -> (forward(x), derivative(x)) for activations, (forward(p, t), d/dp(p, t)) for losses;
# textbook definitions, evaluated exactly, never the library's stable rewrites.
ACTIVATION_REFERENCES = {
    "relu": (lambda x: max(x, 0), _step),
    "leaky_relu": (lambda x: x if x > 0 else mp.mpf("0.01") * x, lambda x: 1 if x > 0 else mp.mpf("0.01")),
    "elu": (lambda x: x if x > 0 else mp.expm1(x), lambda x: 1 if x > 0 else mp.exp(x)),
    "selu": (lambda x: SELU_SCALE * (x if x > 0 else SELU_ALPHA * mp.expm1(x)),
             lambda x: SELU_SCALE * (1 if x > 0 else SELU_ALPHA * mp.exp(x))),
    "sigmoid": (_sigmoid, _sigmoid_derivative),
    "tanh": (mp.tanh, lambda x: mp.sech(x) ** 2),
    "swish": (lambda x: x * _sigmoid(x), _swish_derivative),
    "silu": (lambda x: x * _sigmoid(x), _swish_derivative),
    "softplus": (_softplus, _sigmoid),
    "mish": (lambda x: x * mp.tanh(_softplus(x)),
             lambda x: mp.tanh(_softplus(x)) + x * mp.sech(_softplus(x)) ** 2 * _sigmoid(x)),
    "gelu": (_gelu, _gelu_derivative),
    "gaussian": (lambda x: mp.exp(-x * x), lambda x: -2 * x * mp.exp(-x * x)),
    "softsign": (lambda x: x / (1 + abs(x)), lambda x: 1 / (1 + abs(x)) ** 2),
    "hard_tanh": (lambda x: min(max(x, -1), 1), lambda x: 1 if -1 < x < 1 else 0),
    "sin": (mp.sin, mp.cos),
    "linear": (lambda x: x, lambda x: 1),
    "identity": (lambda x: x, lambda x: 1),
}


def _clip(p):
    # The kernel clips at its dtype's roundings of 1e-7 and 1 - 1e-7; so does the reference
    # (set per dtype by _expected), otherwise float32 would be judged against other bounds.
    return min(max(p, _BCE_BOUNDS[0]), _BCE_BOUNDS[1])


_BCE_BOUNDS = [BCE_EPS, 1 - BCE_EPS]


LOSS_REFERENCES = {
    "mse": (lambda p, t: (p - t) ** 2, lambda p, t: 2 * (p - t)),
    "mae": (lambda p, t: abs(p - t), lambda p, t: _sign(p - t)),
    "huber": (lambda p, t: (p - t) ** 2 / 2 if abs(p - t) <= 1 else abs(p - t) - mp.mpf(1) / 2,
              lambda p, t: (p - t) if abs(p - t) <= 1 else _sign(p - t)),
    "log_cosh": (lambda p, t: _log_cosh(p - t), lambda p, t: mp.tanh(p - t)),
    "bce": (lambda p, t: -(t * mp.log(_clip(p)) + (1 - t) * mp.log(1 - _clip(p))),
            lambda p, t: (-t / p + (1 - t) / (1 - p)) if _BCE_BOUNDS[0] < p < _BCE_BOUNDS[1] else 0),
    "quantile": (lambda p, t: max(mp.mpf("0.5") * (t - p), mp.mpf("-0.5") * (t - p)),
                 lambda p, t: mp.mpf("0.5") * _step(p - t) - mp.mpf("0.5") * _step(t - p)),
}


def test_every_named_formula_is_audited():
    audited = set(ACTIVATION_REFERENCES) | set(LOSS_REFERENCES)
    assert audited == set(NAMED), "add the new named formula's exact definition here"


TINY = {"float64": [5e-324, 1e-300, 1e-30], "float32": [1e-45, 1e-40, 1e-30]}
HUGE = {"float64": [1e10, 1e30, 1e300], "float32": [1e10, 1e30, 3e38]}
ORDINARY = [0.0, 1e-8, 1e-3, 0.25, 0.5, 1.0 - 2 ** -20, 1.0, 1.5, 3.0, 10.0, 20.0, 40.0, 88.0, 89.0,
            100.0, 700.0, 710.0, 1000.0]


def activation_points(dtype):
    magnitudes = sorted(set(TINY[dtype] + HUGE[dtype] + ORDINARY))
    return np.array(sorted({s * m for m in magnitudes for s in (1.0, -1.0)} | {-0.0}), dtype)


def loss_points(dtype):
    """(y_pred, y_true): residuals over the whole range, and bce's interesting corner (0 and 1)."""
    residuals = activation_points(dtype)
    unit = np.array([0.0, 1e-8, 1e-7, 0.5, 1 - 1e-7, 1.0, 1.5, -0.5], dtype)
    p = np.concatenate([residuals, np.repeat(unit, unit.size)]).astype(dtype)
    t = np.concatenate([np.zeros_like(residuals), np.tile(unit, unit.size)]).astype(dtype)
    return p, t


# Accuracy bound: |got - exact| <= ULPS * eps(dtype) * |exact| + the dtype's smallest normal
# + the function's own sensitivity to its rounded inputs (see _input_sensitivity).
# Libm functions are within 1-4 ulp; a formula chains a few of them, and derivatives such as
# swish' = s + x*s*(1 - s) cancel mildly near their zeros, hence 64.
ULPS = 64


def _exact(function, args):
    return function(*(mp.mpf(float(a)) for a in args))


def _input_sensitivity(function, args, exact, dtype):
    """How much the exact value moves when one input moves by a few ulps of its dtype.

    A kernel sees its inputs, and the intermediate values built from them, rounded: a
    function with a large condition number (erfc far in its tail: relative error ~ 2v^2
    times the argument's) cannot be more accurate than that, whatever its implementation.
    A jump (an input next to a kink) is not conditioning and is not counted.
    """
    shift = 4 * mp.mpf(float(np.finfo(dtype).eps))
    moves = []
    for i in range(len(args)):
        for sign in (1, -1):
            moved = [mp.mpf(float(a)) for a in args]
            moved[i] *= 1 + sign * shift
            moves.append(abs(function(*moved) - exact))
    largest = max(moves)
    return 0.0 if largest > mp.mpf("1e-3") * (abs(exact) + 1) else float(largest)


def _expected(function, dtype, *inputs):
    """(exact, exact rounded to dtype, input sensitivity) at every point, as float64 arrays."""
    _BCE_BOUNDS[:] = [mp.mpf(float(np.array(b, dtype))) for b in ("1e-7", 1 - 1e-7)]
    values, sensitivities = [], []
    for args in zip(*inputs):
        exact = _exact(function, args)
        finite = abs(exact) < mp.mpf("1e308")
        values.append(float(exact) if finite else float(mp.sign(exact)) * np.inf)
        sensitivities.append(_input_sensitivity(function, args, exact, dtype) if finite else 0.0)
    values = np.array(values, np.float64)
    with np.errstate(over="ignore"):
        return values, values.astype(dtype).astype(np.float64), np.array(sensitivities)


# Derivatives computed as 1 - y^2 (like PyTorch's tanh backward) are accurate to eps in
# absolute terms only: in the tails 1 - tanh(x)^2 is 0 where sech(x)^2 is 1e-17.
ABSOLUTE_ONLY = {"tanh'"}


def assert_matches_exact(got, exact, rounded, sensitivity, dtype, what):
    got = np.asarray(got, np.float64)
    finite = np.isfinite(rounded)
    not_finite = np.flatnonzero(finite & ~np.isfinite(got))
    assert not_finite.size == 0, f"{what}: not finite where the exact value is: at {not_finite}, got {got[not_finite]}, exact {exact[not_finite]}"
    overflowed = np.flatnonzero(~finite & (got != rounded))
    assert overflowed.size == 0, f"{what}: exact value overflows {dtype} to {rounded[overflowed]}, got {got[overflowed]}"
    info = np.finfo(dtype)
    bound = ULPS * float(info.eps) * np.abs(exact) + float(info.tiny) + sensitivity
    if what.split(" ")[0] in ABSOLUTE_ONLY:
        bound = bound + ULPS * float(info.eps)
    with np.errstate(invalid="ignore"):  # inf - inf where both overflowed: checked above
        error = np.abs(got - exact)
    worst = np.flatnonzero(finite & (error > bound))
    assert worst.size == 0, (f"{what}: error above {ULPS} ulp at {worst}: got {got[worst]}, exact {exact[worst]}")


BACKENDS = ["CPU_PYTHON", "CPU_JIT"]
DTYPES = ["float32", "float64"]


@functools.lru_cache(maxsize=None)
def _activation_results(backend, dtype):
    names = sorted(ACTIVATION_REFERENCES)
    x = activation_points(dtype)
    comp = SymbolicJITCompiler(names, backend, mode="activation", dtype=dtype, strict=True)
    rows = np.ascontiguousarray(np.tile(x, (len(names), 1)))
    with np.errstate(all="ignore"):
        return names, x, comp.forward_kernel(rows), comp.backward_kernel(rows, np.ones_like(rows))


@functools.lru_cache(maxsize=None)
def _loss_results(backend, dtype):
    names = sorted(LOSS_REFERENCES)
    p, t = loss_points(dtype)
    comp = SymbolicJITCompiler(names, backend, mode="loss", dtype=dtype, strict=True)
    tile = lambda v: np.ascontiguousarray(np.tile(v, (len(names), 1)))  # noqa: E731
    with np.errstate(all="ignore"):
        return names, p, t, comp.forward_kernel(tile(p), tile(t)), comp.backward_kernel(tile(p), tile(t))


@pytest.fixture(scope="module", autouse=True)
def _module_cache(tmp_path_factory):
    # The compilers above are shared by the tests of this module: give them one cache of their own.
    from heterosymnn import config
    with config.override(cache_dir=str(tmp_path_factory.mktemp("named_numerics"))):
        yield
    _activation_results.cache_clear()
    _loss_results.cache_clear()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(ACTIVATION_REFERENCES))
def test_named_activation_is_finite_and_accurate_at_extremes(name, backend, dtype):
    names, x, fwd, bwd = _activation_results(backend, dtype)
    row = names.index(name)
    forward, derivative = ACTIVATION_REFERENCES[name]
    assert_matches_exact(fwd[row], *_expected(forward, dtype, x), dtype, f"{name} forward ({backend}, {dtype})")
    assert_matches_exact(bwd[row], *_expected(derivative, dtype, x), dtype, f"{name}' ({backend}, {dtype})")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(LOSS_REFERENCES))
def test_named_loss_is_finite_and_accurate_at_extremes(name, backend, dtype):
    names, p, t, fwd, bwd = _loss_results(backend, dtype)
    row = names.index(name)
    forward, derivative = LOSS_REFERENCES[name]
    assert_matches_exact(fwd[row], *_expected(forward, dtype, p, t), dtype, f"{name} forward ({backend}, {dtype})")
    assert_matches_exact(bwd[row], *_expected(derivative, dtype, p, t), dtype, f"{name}' ({backend}, {dtype})")


NAN = float("nan")
# name -> (f(-inf), f(+inf), f'(-inf), f'(+inf)), pinned for every backend and dtype.
AT_INFINITY = {
    "relu": (0, np.inf, 0, 1), "leaky_relu": (-np.inf, np.inf, 0.01, 1), "elu": (-1, np.inf, 0, 1),
    "selu": (float(-SELU_SCALE * SELU_ALPHA), np.inf, 0, float(SELU_SCALE)),
    "sigmoid": (0, 1, 0, 0), "tanh": (-1, 1, 0, 0), "softplus": (0, np.inf, 0, 1),
    "softsign": (-1, 1, 0, 0), "hard_tanh": (-1, 1, 0, 0), "gaussian": (0, 0, 0, 0),
    "swish": (NAN, np.inf, NAN, NAN), "silu": (NAN, np.inf, NAN, NAN), "mish": (NAN, np.inf, NAN, NAN),
    "gelu": (0, np.inf, 0, 1), "sin": (NAN, NAN, NAN, NAN),
    "linear": (-np.inf, np.inf, 1, 1), "identity": (-np.inf, np.inf, 1, 1),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_named_activations_at_infinity(backend, dtype):
    assert set(AT_INFINITY) == set(ACTIVATION_REFERENCES)
    names = sorted(AT_INFINITY)
    comp = SymbolicJITCompiler(names, backend, dtype=dtype, strict=True)
    x = np.tile(np.array([-np.inf, np.inf], dtype), (len(names), 1))
    with np.errstate(all="ignore"):
        fwd, bwd = comp.forward_kernel(x), comp.backward_kernel(x, np.ones_like(x))
    for row, name in enumerate(names):
        expected = np.array(AT_INFINITY[name], np.float64).astype(dtype)
        np.testing.assert_allclose(np.concatenate([fwd[row], bwd[row]]), expected, rtol=1e-6,
                                   err_msg=f"{name} at -inf, +inf (forward, then derivative)")


# Derivatives that do not depend on the input where NaN lands (np.select semantics: a NaN
# condition falls through to the last branch), as in PyTorch: leaky_relu'(NaN) = 0.01.
NAN_INDEPENDENT_DERIVATIVE = {"identity", "linear", "leaky_relu"}


@pytest.mark.parametrize("name", sorted(NAMED))
def test_named_formula_is_nan_for_nan(name):
    """NaN in gives NaN out: a stable form must not hide a NaN in a branch it does not take."""
    mode = NAMED[name].kind
    comp = SymbolicJITCompiler([name], "CPU_PYTHON", mode=mode, dtype="float64")
    nan = np.array([NAN])
    args = (nan,) if mode == "activation" else (nan, np.array([0.5]))
    with np.errstate(all="ignore"):
        assert np.isnan(comp.forward_kernel(*args)).all(), name
        grad = comp.backward_kernel(*args) if mode == "loss" else comp.backward_kernel(nan, np.ones(1))
    assert np.isnan(grad).all() != (name in NAN_INDEPENDENT_DERIVATIVE), (name, grad)
