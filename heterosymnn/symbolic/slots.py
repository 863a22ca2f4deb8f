"""Replace a node's constants by canonically numbered parameter slots.

``a*sin(num) + b`` and ``w*sin(num) + c`` must become the same structure. SymPy
orders the arguments of ``Add``/``Mul`` partly by symbol name, so numbering
slots by first appearance depends on the names; renumbering the slotted
expression until the numbering is stable removes that dependence in practice.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import sympy as sp

from .parser import constant_name
from .structure import slot_symbols

MAX_RENUMBERING_PASSES = 6


def _first_appearance(expr: sp.Expr, wanted) -> List[sp.Symbol]:
    order: List[sp.Symbol] = []
    for node in sp.preorder_traversal(expr):
        if isinstance(node, sp.Symbol) and wanted(node) and node not in order:
            order.append(node)
    return order


def to_slots(expr: sp.Expr) -> Tuple[sp.Expr, Tuple[str, ...]]:
    """The slotted expression and, per slot, the user's constant name."""
    constants = _first_appearance(expr, lambda s: constant_name(s) is not None)
    slots = slot_symbols(len(constants))
    names = [constant_name(c) for c in constants]
    slotted = expr.xreplace(dict(zip(constants, slots)))
    slot_set = set(slots)
    for _ in range(MAX_RENUMBERING_PASSES):
        order = _first_appearance(slotted, lambda s: s in slot_set)
        if order == list(slots[:len(order)]):
            break
        permutation: Dict[sp.Symbol, sp.Symbol] = {old: slots[i] for i, old in enumerate(order)}
        names = [names[slots.index(old)] for old in order]
        slotted = slotted.xreplace(permutation)
    return slotted, tuple(names)
