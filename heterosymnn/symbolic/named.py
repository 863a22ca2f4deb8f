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

from .conditions import substitute
from .parser import NamedCall, ParseContext, constant_symbol, parse
from .named_table import NAMED, NamedFormula  # noqa: F401  (re-exported)
from .structure import VARIABLES


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


@dataclasses.dataclass
class UsedDefaults:
    """The default constants that the named formulas expanded in one node bring.

    Filled while one node is parsed (an accumulator, not a value passed between stages).
    """

    values: Dict[str, Tuple[float, str]] = dataclasses.field(default_factory=dict)
    """``constant name -> (default value, formula name)``, the first default seen wins."""
    conflicts: Dict[str, str] = dataclasses.field(default_factory=dict)
    """``constant name -> "swish and elu"``: formulas that give one constant different defaults."""


def named_calls(used: UsedDefaults) -> Mapping[str, NamedCall]:
    """Named formulas as parser calls; expanding one records its default constants in ``used``."""

    def make(name: str) -> NamedCall:
        formula = NAMED[name]
        n_vars = len(VARIABLES[formula.kind])

        def expand(args: Tuple[sp.Expr, ...]) -> sp.Expr:
            expr, placeholders = _template(name)
            bound = dict(zip(placeholders, args))
            for constant, default in formula.defaults[len(args) - n_vars:]:
                previous = used.values.setdefault(constant, (default, name))
                if previous[0] != default:
                    used.conflicts.setdefault(constant, f"{previous[1]} and {name}")
            return substitute(expr, bound)  # a Piecewise argument may land in a condition

        return NamedCall(expand=expand, arity=(n_vars, n_vars + len(formula.defaults)))

    return {name: make(name) for name in NAMED}


def whole_config_call(name: str, mode: str) -> str:
    """The formula text a bare named config stands for (``"relu"`` -> ``"relu(num)"``)."""
    args = ", ".join(v.name for v in VARIABLES[mode])
    return f"{name}({args})"


def is_named_for_mode(name: str, mode: str) -> bool:
    return name in NAMED and NAMED[name].kind == mode
