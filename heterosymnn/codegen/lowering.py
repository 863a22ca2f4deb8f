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


def _minus_abs_argument(piecewise: sp.Basic):
    """``u`` when ``piecewise`` is ``Piecewise((-u, u >= 0), (u, True))``, i.e. -|u|, else None."""
    if not isinstance(piecewise, sp.Piecewise) or len(piecewise.args) != 2:
        return None
    (first, cond), (second, last) = piecewise.args
    if last is not sp.true or first != -second:
        return None
    if isinstance(cond, sp.GreaterThan) and cond.lhs == second and cond.rhs.is_zero:
        return second
    if isinstance(cond, sp.LessThan) and cond.rhs == second and cond.lhs.is_zero:
        return second
    return None


def exp_of_minus_abs(expr: sp.Basic) -> sp.Basic:
    """``expr`` with each ``Piecewise((-u, u >= 0), (u, True))`` inside an ``exp`` written ``-Abs(u)``.

    That is the stable forms' ``e^-|u|`` (sigmoid, softplus, swish ..., and ``e^(2*...)`` in
    their derivatives). GCC if-converts ``exp(c ? -u : u)`` by calling the vector ``exp`` on
    both arms and blending (twice the work), while ``-fabs(u)`` is one instruction feeding
    one call. Rewritten only where the two agree on every input: they differ in the sign of
    a zero alone (the Piecewise gives +0 for -0, -|u| gives -0), and only through sums and
    products does that sign reach ``exp``, where ``exp(+0) == exp(-0)``; NaN stays NaN.
    """
    if not expr.has(sp.Piecewise):
        return expr

    def through_sums_and_products(node: sp.Basic) -> sp.Basic:
        u = _minus_abs_argument(node)
        if u is not None:
            return -sp.Abs(u)
        if isinstance(node, (sp.Add, sp.Mul)):
            args = tuple(through_sums_and_products(arg) for arg in node.args)
            return node.func(*args) if args != node.args else node
        return node

    return expr.replace(lambda node: isinstance(node, sp.exp),
                        lambda node: sp.exp(through_sums_and_products(node.args[0]), evaluate=False))


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
    replacements, reduced = sp.cse([exp_of_minus_abs(e) for e in exprs], symbols=names)
    replacements, reduced = _reuse_exp(replacements, reduced)
    replacements, reduced = _hoist_sin_cos(replacements, reduced, names)
    temps: List[Tuple[sp.Symbol, sp.Basic]] = []
    for name, value in replacements:
        temps.append((name, _bind_power_bases(value, temps, names)))
    results = tuple(_bind_power_bases(r, temps, names) for r in reduced)
    return Lowered(tuple(temps), results)


def _hoist_sin_cos(replacements: List[Tuple[sp.Symbol, sp.Basic]], reduced: List[sp.Basic],
                   names: Iterator[sp.Symbol]):
    """Every ``sin``/``cos`` call of a body with both bound to a temporary of its own.

    Such bodies call sin and cos through non-builtin aliases (see ``c_prelude``), and GCC
    if-converts a call in a Piecewise branch only when it is a builtin: ``c ? sin(x) :
    cos(x)`` left the whole loop scalar. Computed unconditionally (as the vector loop
    would anyway) and kept there (the prelude turns off GCC's sinking of them back into
    the branches), the branch is a blend of two vectors.
    """
    exprs = [v for _, v in replacements] + list(reduced)
    pairs = {f.args[0] for e in exprs for f in e.atoms(sp.sin)} & \
            {f.args[0] for e in exprs for f in e.atoms(sp.cos)}
    if not pairs:
        return replacements, reduced
    hoisted: Dict[sp.Basic, sp.Symbol] = {}
    out: List[Tuple[sp.Symbol, sp.Basic]] = []

    def bind(expr: sp.Basic, whole: bool) -> sp.Basic:
        while True:  # innermost calls first: sin(cos(x)) is two temporaries
            calls = sorted((f for f in expr.atoms(sp.sin, sp.cos)
                            if not f.args[0].has(sp.sin, sp.cos) and not (whole and f == expr)),
                           key=sp.default_sort_key)
            if not calls:
                return expr
            for call in calls:
                if call not in hoisted:
                    hoisted[call] = next(names)
                    out.append((hoisted[call], call))
            expr = expr.xreplace({call: hoisted[call] for call in calls})

    for name, value in replacements:
        value = bind(value, whole=True)
        out.append((name, value))
    return out, [bind(r, whole=False) for r in reduced]


def _reuse_exp(replacements: List[Tuple[sp.Symbol, sp.Basic]], reduced: List[sp.Basic]):
    """``exp(k*w)`` written ``t**k`` (a product) where a temporary ``t`` is ``exp(w)``, k = 2..4.

    SymPy's derivatives merge ``exp(w)*exp(w)`` into ``exp(2*w)`` (the sigmoid's, the
    swish's), and a vector loop would call ``exp`` once more for it. The product rounds
    once or twice more than the call: within the tolerance every backend is held to,
    and overflow and underflow happen at the same arguments.
    """
    known: Dict[sp.Basic, sp.Symbol] = {}
    out: List[Tuple[sp.Symbol, sp.Basic]] = []

    def reuse(expr: sp.Basic) -> sp.Basic:
        def power_of_known(node: sp.Basic):
            for w, temp in known.items():
                k = node.args[0] / w
                if k.is_Integer and 2 <= k <= MAX_EXPANDED_POWER:
                    return temp ** k
            return None
        if not known or not expr.has(sp.exp):
            return expr
        return expr.replace(lambda node: isinstance(node, sp.exp) and power_of_known(node) is not None,
                            power_of_known)

    for name, value in replacements:
        value = reuse(value)
        out.append((name, value))
        if isinstance(value, sp.exp):
            known[value.args[0]] = name
    return out, [reuse(r) for r in reduced]


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
