"""Named formulas (``relu``, ``swish``, ``huber`` ...) and their default constants.

Each is written in the formula language itself and parsed by the same safe
parser, so a named formula and the same formula spelled out give one
structure. A named formula can be a whole config (``"relu"``) or be called
inside a formula (``"relu(num) + 0.1*sin(num)"``); extra call arguments bind
its constants in order (``leaky_relu(num, 0.2)``). Its constants become
constants of the node, so the node's dict overrides the defaults.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Dict, Mapping, Tuple

import sympy as sp

from .parser import NamedCall, ParseContext, constant_symbol, parse
from .structure import ACTIVATION, LOSS, VARIABLES

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
# sigmoid(u) without overflow: 1/(1 + e^-u) for u >= 0, e^u/(1 + e^u) below.
_SIGMOID = "Piecewise((1/(1 + exp(-({u}))), {u} >= 0), (exp({u})/(1 + exp({u})), True))"
# softplus(u) = log(1 + e^u) = max(u, 0) + log1p(e^-|u|), one branch per sign of u.
_SOFTPLUS = "Piecewise(({u} + log1p(exp(-({u}))), {u} > 0), (log1p(exp({u})), True))"
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


@functools.lru_cache(maxsize=None)
def _template(name: str) -> Tuple[sp.Expr, Tuple[sp.Symbol, ...]]:
    """The named formula parsed once: its expression and the symbols its arguments replace."""
    formula = NAMED[name]
    variables = VARIABLES[formula.kind]
    context = ParseContext(
        variables={v.name: v for v in variables},
        constants=[c for c, _ in formula.defaults],
        named={},
    )
    expr = parse(formula.text, context)
    params = tuple(constant_symbol(c) for c, _ in formula.defaults)
    return expr, variables + params


def named_calls(used_defaults: Dict[str, Tuple[float, str]]) -> Mapping[str, NamedCall]:
    """Named formulas as parser calls; expanding one records its default constants.

    ``used_defaults`` collects ``constant name -> (default value, formula name)``
    for every named formula expanded while parsing one node.
    """

    def make(name: str) -> NamedCall:
        formula = NAMED[name]
        n_vars = len(VARIABLES[formula.kind])

        def expand(args: Tuple[sp.Expr, ...]) -> sp.Expr:
            expr, placeholders = _template(name)
            bound = dict(zip(placeholders, args))
            for constant, default in formula.defaults[len(args) - n_vars:]:
                previous = used_defaults.setdefault(constant, (default, name))
                if previous[0] != default:
                    used_defaults.setdefault(f"conflict:{constant}", (default, f"{previous[1]} and {name}"))
            return expr.xreplace(bound)

        return NamedCall(expand=expand, arity=(n_vars, n_vars + len(formula.defaults)))

    return {name: make(name) for name in NAMED}


def whole_config_call(name: str, mode: str) -> str:
    """The formula text a bare named config stands for (``"relu"`` -> ``"relu(num)"``)."""
    args = ", ".join(v.name for v in VARIABLES[mode])
    return f"{name}({args})"


def is_named_for_mode(name: str, mode: str) -> bool:
    return name in NAMED and NAMED[name].kind == mode
