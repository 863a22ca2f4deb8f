"""Replace a node's constants by canonically numbered parameter slots.

``a*sin(num) + b`` and ``w*sin(num) + c`` must become the same structure. SymPy
orders the arguments of ``Add``/``Mul`` partly by symbol name, so numbering
slots by first appearance depends on the names (``a*num + b*num**2`` and
``b*num + a*num**2`` list their constants in opposite orders). Slots are
therefore numbered by where each constant sits, never by its name: one at a
time, the constant whose view of the expression (itself marked, the constants
not yet numbered all alike, the numbered ones as their slots) sorts first gets
the next slot.
"""
from __future__ import annotations

from typing import List, Tuple

import sympy as sp

from .parser import constant_name
from .structure import slot_symbols

# Stand-ins that no user name can produce (constants are prefixed, slots are p0, p1 ...).
_MARKED = sp.Symbol("slot:marked", real=True)
_UNNUMBERED = sp.Symbol("slot:other", real=True)


def _constants(expr: sp.Expr) -> List[sp.Symbol]:
    found = {s for s in expr.free_symbols if isinstance(s, sp.Symbol) and constant_name(s) is not None}
    return sorted(found, key=lambda s: s.name)


def _view(expr: sp.Expr, numbered: List[sp.Symbol], candidate: sp.Symbol,
          rest: List[sp.Symbol]) -> Tuple[int, str]:
    mapping = dict(zip(numbered, slot_symbols(len(numbered))))
    mapping.update({c: _UNNUMBERED for c in rest if c is not candidate})
    mapping[candidate] = _MARKED
    try:
        return 0, sp.srepr(expr.xreplace(mapping))
    except Exception:  # noqa: BLE001 - any SymPy failure on a stand-in view
        # Making the other constants alike changes the formula (huber(a, b) with a and b alike
        # is a Piecewise of 0 and -delta**2/2, whose log SymPy refuses inside a Max). Such a
        # view sorts last; the numbering stays valid, only sharing with renamings may be lost.
        return 1, ""


def to_slots(expr: sp.Expr) -> Tuple[sp.Expr, Tuple[str, ...]]:
    """The slotted expression and, per slot, the user's constant name."""
    rest = _constants(expr)
    numbered: List[sp.Symbol] = []
    while rest:
        # Constants whose views tie sit symmetrically (a*b*num): either order gives one expression.
        chosen = min(rest, key=lambda c: _view(expr, numbered, c, rest))
        numbered.append(chosen)
        rest.remove(chosen)
    slotted = expr.xreplace(dict(zip(numbered, slot_symbols(len(numbered)))))
    return slotted, tuple(constant_name(c) for c in numbered)
