"""Node configs as users write them -> ``(formula text, constants dict)``, validated.

No SymPy here: a warm start normalises configs and finds the cached plan
without ever importing it.
"""
from __future__ import annotations

import keyword
import math
import numbers
import unicodedata
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
        f"a node config must be a formula string or a (formula, constants_dict) pair, got {shown(config)}")


def shown(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, for messages; never raises.

    User objects may have a failing ``__repr__``, and Python refuses to print an
    int of more than 4300 digits: an error message must not fail over either.
    """
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - any failure only changes how the value is shown
        if isinstance(value, int):
            text = f"an int of {len(format(value, 'x')) * 1.2:.0f} or so digits"
        else:
            text = f"<{type(value).__name__} object>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _constant_value(name: Any, value: Any) -> float:
    if not isinstance(name, str) or not name.isidentifier():
        raise FormulaSyntaxProblem(f"constant name {shown(name, 40)} is not an identifier")
    if keyword.iskeyword(name):
        raise FormulaSyntaxProblem(f"constant name '{name}' is a Python keyword and cannot be written "
                                   f"in a formula; rename it (e.g. '{name}_')")
    spelled = unicodedata.normalize("NFKC", name)
    if spelled != name:
        # Python reads identifiers in NFKC form, so the formula could never name this key.
        raise FormulaSyntaxProblem(f"constant name {name!r} is read as {spelled!r} in a formula; "
                                   f"use {spelled!r} as the key")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise FormulaSyntaxProblem(f"constant '{name}' must be a real number, got {shown(value, 40)}")
    try:
        number = float(value)
    except (OverflowError, TypeError, ValueError):  # e.g. 10**400 or a Fraction beyond float64
        number = math.inf
    if not math.isfinite(number):
        raise FormulaSyntaxProblem(f"constant '{name}' must be a finite float64, got {shown(value, 40)}")
    return number
