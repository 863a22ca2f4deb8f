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
NAMED: Dict[str, NamedFormula] = {
    "relu": NamedFormula("Max(num, 0)", _A, doc="max(x, 0); relu'(0) = 0"),
    "leaky_relu": NamedFormula("Piecewise((num, num > 0), (alpha*num, True))", _A, (("alpha", 0.01),)),
    "elu": NamedFormula("Piecewise((num, num > 0), (alpha*(exp(num) - 1), True))", _A, (("alpha", 1.0),)),
    "selu": NamedFormula(
        f"{SELU_SCALE}*Piecewise((num, num > 0), ({SELU_ALPHA}*(exp(num) - 1), True))", _A),
    "sigmoid": NamedFormula("1/(1 + exp(-num))", _A),
    "tanh": NamedFormula("tanh(num)", _A),
    "swish": NamedFormula("num/(1 + exp(-beta*num))", _A, (("beta", 1.0),)),
    "silu": NamedFormula("num/(1 + exp(-num))", _A),
    "softplus": NamedFormula("log(1 + exp(num))", _A),
    "mish": NamedFormula("num*tanh(log(1 + exp(num)))", _A),
    "gelu": NamedFormula("num*(1 + erf(num/sqrt(2)))/2", _A, doc="exact (erf) form"),
    "gaussian": NamedFormula("exp(-num**2)", _A),
    "softsign": NamedFormula("num/(1 + Abs(num))", _A),
    "hard_tanh": NamedFormula("Max(-1, Min(1, num))", _A),
    "sin": NamedFormula("sin(num)", _A),
    "linear": NamedFormula("num", _A),
    "identity": NamedFormula("num", _A),
    "mse": NamedFormula("(y_pred - y_true)**2", _L),
    "mae": NamedFormula("Abs(y_pred - y_true)", _L),
    "huber": NamedFormula(
        "Piecewise(((y_pred - y_true)**2/2, Abs(y_pred - y_true) <= delta), "
        "(delta*(Abs(y_pred - y_true) - delta/2), True))", _L, (("delta", 1.0),)),
    "log_cosh": NamedFormula("log(cosh(y_pred - y_true))", _L),
    "bce": NamedFormula(
        f"-(y_true*log(Min(Max(y_pred, {BCE_EPSILON}), 1 - {BCE_EPSILON})) + "
        f"(1 - y_true)*log(1 - Min(Max(y_pred, {BCE_EPSILON}), 1 - {BCE_EPSILON})))", _L,
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
