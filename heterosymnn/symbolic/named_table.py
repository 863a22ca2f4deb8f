"""The named formulas (``relu``, ``swish``, ``huber`` ...) as data: text, kind, defaults.

Kept free of SymPy so that a warm process can fingerprint the table (a layer
plan cached for ``"sigmoid"`` is only valid for the definition it was made
from) without importing SymPy; :mod:`.named` parses them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Dict, Tuple

from .modes import ACTIVATION, LOSS

SELU_SCALE = "1.0507009873554804934193349852946"
SELU_ALPHA = "1.6732632423543772848170429916717"
BCE_EPSILON = "1e-7"


@dataclasses.dataclass(frozen=True)
class NamedFormula:
    text: str
    kind: str  # ACTIVATION formulas take (x, *constants); LOSS ones (y_pred, y_true, *constants)
    defaults: Tuple[Tuple[str, float], ...] = ()
    doc: str = ""


_A, _L = ACTIVATION, LOSS

# Stable forms. A named formula must be finite wherever its mathematical value is (for
# finite inputs), forward and backward, in float32 and float64: exp() only ever sees a
# non-positive argument, log(1 + u) is log1p(u), and the SymPy derivative of each branch
# is as stable as the branch. A formula a user spells out keeps exactly what they wrote;
# these are the library's spellings behind the names. README "Numerics" has the table.
#
# sigmoid(u) without overflow: 1/(1 + t) for u >= 0, t/(1 + t) below, where t = e^-|u|.
# t is exp of a Piecewise rather than exp(-Abs(u)): both branches share the one exp (a
# vector loop computes every branch), and the inner Piecewise's derivative is -1 at
# u = 0, so sigmoid'(0) = 1/4 (with Abs' = sign, it would be 0).
_EXP_MINUS_ABS = "exp(Piecewise((-({u}), {u} >= 0), ({u}, True)))"
_SIGMOID = "Piecewise((1/(1 + {t}), {u} >= 0), ({t}/(1 + {t}), True))".replace("{t}", _EXP_MINUS_ABS)
# softplus(u) = log(1 + e^u) = max(u, 0) + log1p(e^-|u|), one branch per sign of u, one exp.
_SOFTPLUS = "Piecewise(({u} + log1p({t}), {u} >= 0), (log1p({t}), True))".replace("{t}", _EXP_MINUS_ABS)
# log(cosh(d)): log1p(2 sinh(d/2)^2) keeps full relative precision for small |d| (a loss
# near its minimum); |d| + log1p(e^-2|d|) - log(2) never overflows for large |d|.
_LOG_COSH = ("Piecewise((log1p(2*sinh(({d})/2)**2), Abs({d}) < 1), "
             "(Abs({d}) + log1p(exp(-2*Abs({d}))) - log(2), True))")
# softsign(u) = u/(1 + |u|); written as sign(u)*(1 - 1/(1 + |u|)) where |u| >= 1 so that
# u = +-inf gives +-1 and the derivative 1/(1 + |u|)^2 is not inf/inf.
_SOFTSIGN = "Piecewise((num/(1 + Abs(num)), Abs(num) < 1), (sign(num)*(1 - 1/(1 + Abs(num))), True))"
# exp(-u^2) is 0 in float64 (even as a denormal) beyond |u| = 27.3; saying so explicitly keeps
# the derivative -2u*exp(-u^2) from becoming (-inf)*0 = NaN when 2u overflows. NaN falls
# through to the last branch and stays NaN.
_GAUSSIAN = "Piecewise((0, Abs(num) >= 40), (exp(-num**2), True))"
# gelu(u) = u*(1 + erf(u/sqrt(2)))/2; for u < 0 that sum cancels (1 + erf(-7) is 0, the true
# value 1e-23), so there it is u*erfc(|u|/sqrt(2))/2. (erfc(-u/sqrt(2)) would not do: SymPy
# rewrites erfc(-v) as 2 - erfc(v), and the cancellation is back.) Beyond |u| = 40 gelu is u
# or 0 to the last bit in float64; saying so keeps sqrt(2)*u from overflowing float32 in the
# derivative (inf*0 = NaN) and gives the limits 0 and 1 at -inf and +inf.
_GELU = ("Piecewise((num, num >= 40), (0, num <= -40), (num*(1 + erf(num/sqrt(2)))/2, num >= 0), "
         "(num*erfc(Abs(num)/sqrt(2))/2, True))")
_RESIDUAL = "y_pred - y_true"

NAMED: Dict[str, NamedFormula] = {
    "relu": NamedFormula("Max(num, 0)", _A, doc="max(x, 0); relu'(0) = 0"),
    "leaky_relu": NamedFormula("Piecewise((num, num > 0), (alpha*num, True))", _A, (("alpha", 0.01),)),
    "elu": NamedFormula("Piecewise((num, num > 0), (alpha*expm1(num), True))", _A, (("alpha", 1.0),)),
    "selu": NamedFormula(
        f"{SELU_SCALE}*Piecewise((num, num > 0), ({SELU_ALPHA}*expm1(num), True))", _A),
    "sigmoid": NamedFormula(_SIGMOID.format(u="num"), _A),
    "tanh": NamedFormula("tanh(num)", _A),
    "swish": NamedFormula(f"num*{_SIGMOID.format(u='beta*num')}", _A, (("beta", 1.0),)),
    "silu": NamedFormula(f"num*{_SIGMOID.format(u='num')}", _A),
    "softplus": NamedFormula(_SOFTPLUS.format(u="num"), _A),
    "mish": NamedFormula(f"num*tanh({_SOFTPLUS.format(u='num')})", _A),
    "gelu": NamedFormula(_GELU, _A, doc="exact (erf) form"),
    "gaussian": NamedFormula(_GAUSSIAN, _A),
    "softsign": NamedFormula(_SOFTSIGN, _A),
    "hard_tanh": NamedFormula("Max(-1, Min(1, num))", _A),
    "sin": NamedFormula("sin(num)", _A),
    "linear": NamedFormula("num", _A),
    "identity": NamedFormula("num", _A),
    "mse": NamedFormula("(y_pred - y_true)**2", _L),
    "mae": NamedFormula("Abs(y_pred - y_true)", _L),
    "huber": NamedFormula(
        "Piecewise(((y_pred - y_true)**2/2, Abs(y_pred - y_true) <= delta), "
        "(delta*(Abs(y_pred - y_true) - delta/2), True))", _L, (("delta", 1.0),)),
    "log_cosh": NamedFormula(_LOG_COSH.format(d=_RESIDUAL), _L),
    "bce": NamedFormula(
        f"-(y_true*log(Min(Max(y_pred, {BCE_EPSILON}), 1 - {BCE_EPSILON})) + "
        f"(1 - y_true)*log1p(-Min(Max(y_pred, {BCE_EPSILON}), 1 - {BCE_EPSILON})))", _L,
        doc=f"binary cross-entropy with y_pred clipped to [{BCE_EPSILON}, 1 - {BCE_EPSILON}]"),
    "quantile": NamedFormula("Max(tau*(y_true - y_pred), (tau - 1)*(y_true - y_pred))", _L,
                             (("tau", 0.5),)),
}


def named_table_fingerprint() -> str:
    """SHA-256 of every named formula's text, kind and defaults: changes when any definition does."""
    table = {name: [f.text, f.kind, [list(d) for d in f.defaults]] for name, f in sorted(NAMED.items())}
    return hashlib.sha256(json.dumps(table, sort_keys=True).encode("utf-8")).hexdigest()
