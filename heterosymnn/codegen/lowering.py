"""Target-neutral lowering of an expression into straight-line code.

A kernel body is a list of temporaries followed by one result expression.
Common subexpressions (``tanh(x)`` in ``1 - tanh(x)**2``) are computed once,
and the base of every power that the printers expand into a product
(``(x + 1)**2`` -> ``t*t``) is bound to a temporary first, so the product never
repeats a long expression. Shared by the C and CUDA printers.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Iterator, List, Sequence, Tuple

import sympy as sp
from sympy.logic.boolalg import Boolean

#: Integer exponents up to this magnitude are printed as products; beyond it
#: a chain of products loses more accuracy than pow() and stops being cheaper.
MAX_EXPANDED_POWER = 4


@dataclasses.dataclass(frozen=True)
class Lowered:
    """Straight-line form of one or more expressions.

    Attributes
    ----------
    temps : tuple of (sympy.Symbol, sympy.Basic)
        Temporaries in evaluation order; each may use the earlier ones.
    results : tuple of sympy.Basic
        The lowered expressions, in the order given to :func:`lower`.
    """

    temps: Tuple[Tuple[sp.Symbol, sp.Basic], ...]
    results: Tuple[sp.Basic, ...]

    def free_symbols(self) -> set:
        """Symbols used by the temporaries and results, temporaries excluded."""
        used: set = set()
        for _, value in self.temps:
            used |= value.free_symbols
        for result in self.results:
            used |= result.free_symbols
        return used - {name for name, _ in self.temps}


def sin_cos_pairs(lowered: Lowered) -> set:
    """Arguments that appear both in a ``sin`` and a ``cos`` of ``lowered``."""
    sins, coss = set(), set()
    for value in [v for _, v in lowered.temps] + list(lowered.results):
        sins |= {f.args[0] for f in value.atoms(sp.sin)}
        coss |= {f.args[0] for f in value.atoms(sp.cos)}
    return sins & coss


def is_boolean(expr: sp.Basic) -> bool:
    """True for conditions (relationals, And/Or/Not), which live in an ``int``."""
    return isinstance(expr, Boolean)


def expands_to_product(exp: sp.Basic) -> bool:
    """Whether a printer writes ``base**exp`` as a product of ``base``."""
    if not (exp.is_Number and exp.is_finite):
        return False
    value = float(exp)
    return value.is_integer() and 2 <= abs(value) <= MAX_EXPANDED_POWER


def lower(exprs: Sequence[sp.Basic], prefix: str = "t") -> Lowered:
    """Common-subexpression-eliminate ``exprs`` and bind expanded power bases.

    Parameters
    ----------
    exprs : sequence of sympy.Basic
        Expressions evaluated together (one loop body).
    prefix : str
        Name prefix of the temporaries (``t0``, ``t1``, ...).
    """
    names: Iterator[sp.Symbol] = sp.numbered_symbols(prefix, real=True)
    replacements, reduced = sp.cse(list(exprs), symbols=names)
    temps: List[Tuple[sp.Symbol, sp.Basic]] = []
    for name, value in replacements:
        temps.append((name, _bind_power_bases(value, temps, names)))
    results = tuple(_bind_power_bases(r, temps, names) for r in reduced)
    return Lowered(tuple(temps), results)


def _bind_power_bases(expr: sp.Basic, temps: List[Tuple[sp.Symbol, sp.Basic]],
                      names: Iterator[sp.Symbol]) -> sp.Basic:
    if expr.is_Atom:
        return expr
    args = tuple(_bind_power_bases(arg, temps, names) for arg in expr.args)
    if args != expr.args:
        expr = expr.func(*args)
    if (isinstance(expr, sp.Pow) and expands_to_product(expr.exp)
            and not (expr.base.is_Symbol or expr.base.is_Number)):
        name = next(names)
        temps.append((name, expr.base))
        expr = sp.Pow(name, expr.exp, evaluate=False)
    return expr


#: Names the generated code gives the input variables of each mode...
INPUT_NAMES = {"activation": ("x",), "loss": ("yp", "yt")}
#: ...and the kernel argument each one is read from.
INPUT_POINTERS = {"x": "a", "yp": "a", "yt": "b"}


@dataclasses.dataclass(frozen=True)
class Body:
    """One loop body: the lowered expression and the local names of what it reads.

    Attributes
    ----------
    lowered : Lowered
        The expression, lowered.
    used : frozenset of sympy.Symbol
        Inputs and slots the body reads.
    inputs : dict of sympy.Symbol to str
        Each variable's name in the loop (``x``, ``yp``, ``yt``).
    slots : dict of sympy.Symbol to str
        Each slot ``p<i>``'s local constant (``c<i>``).
    """

    lowered: Lowered
    used: frozenset
    inputs: Dict[sp.Symbol, str]
    slots: Dict[sp.Symbol, str]

    def symbol_names(self) -> Dict[sp.Symbol, str]:
        """What a printer calls every symbol of the body (temporaries keep their names)."""
        return {**self.inputs, **self.slots, **{t: str(t) for t, _ in self.lowered.temps}}


def bind_structure(structure, expr: sp.Basic, *more: sp.Basic) -> Body:
    """Lower ``expr`` of ``structure`` and name its inputs and slots (shared by C and CUDA).

    Inputs are named ``x``/``yp``/``yt``, slot ``p<i>`` the local constant ``c<i>``.
    ``more`` expressions are lowered with it (one loop body computing them all,
    their common subexpressions computed once); the results keep this order.
    """
    inputs = dict(zip(structure.variables, INPUT_NAMES[structure.mode]))
    slots = {s: f"c{i}" for i, s in enumerate(structure.slots)}
    lowered = lower([expr, *more])
    used = lowered.free_symbols()
    unknown = used - set(inputs) - set(slots)
    if unknown:
        raise ValueError(f"structure {structure.key[:12]}: unexpected symbols {sorted(map(str, unknown))}")
    return Body(lowered, frozenset(used), inputs, slots)


def element_body(printer, body: Body, ctype: str, grad: bool) -> List[str]:
    """The statements computing ``out[i]`` (shared by the C and CUDA loops).

    Inputs are loaded only when used; boolean temporaries are ``int`` so no
    ``<stdbool.h>`` is needed; backward activations multiply by ``g[i]``.
    """
    lines = [f"        const {ctype} {cname} = {INPUT_POINTERS[cname]}[i];"
             for var, cname in body.inputs.items() if var in body.used]
    for temp, value in body.lowered.temps:
        ttype = "int" if is_boolean(value) else ctype
        lines.append(f"        const {ttype} {temp} = {printer.expression(value)};")
    result = printer.expression(body.lowered.results[0])
    lines.append(f"        out[i] = g[i]*({result});" if grad else f"        out[i] = {result};")
    return lines
