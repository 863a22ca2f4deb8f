"""Node configs as users write them -> ``(formula text, constants dict)``, validated.

No SymPy here: a warm start normalises configs and finds the cached plan
without ever importing it.
"""
from __future__ import annotations

import keyword
import math
import numbers
from typing import Any, Dict, Mapping, Tuple


class FormulaSyntaxProblem(Exception):
    """One reason a formula is rejected (message meant for the user)."""


def normalize_config(config: Any) -> Tuple[str, Dict[str, float]]:
    """``"relu"`` or ``(expression, constants)`` -> ``(expression, constants)``, validated."""
    if isinstance(config, str):
        return config, {}
    if isinstance(config, (tuple, list)) and 1 <= len(config) <= 2 and isinstance(config[0], str):
        constants = config[1] if len(config) == 2 else {}
        if constants is None:
            constants = {}
        if not isinstance(constants, Mapping):
            raise FormulaSyntaxProblem(
                f"the constants of a node must be a dict of name -> number, got {type(constants).__name__}")
        return config[0], {name: _constant_value(name, value) for name, value in constants.items()}
    raise FormulaSyntaxProblem(
        f"a node config must be a formula string or a (formula, constants_dict) pair, got {config!r:.80}")


def _constant_value(name: Any, value: Any) -> float:
    if not isinstance(name, str) or not name.isidentifier():
        raise FormulaSyntaxProblem(f"constant name {name!r} is not an identifier")
    if keyword.iskeyword(name):
        raise FormulaSyntaxProblem(f"constant name '{name}' is a Python keyword and cannot be written "
                                   f"in a formula; rename it (e.g. '{name}_')")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise FormulaSyntaxProblem(f"constant '{name}' must be a real number, got {value!r:.40}")
    if not math.isfinite(float(value)):
        raise FormulaSyntaxProblem(f"constant '{name}' must be finite, got {value}")
    return float(value)
