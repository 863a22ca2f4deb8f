"""A config list -> the distinct structures it uses and each node's constants.

This is the whole symbolic front end seen from outside: :func:`analyze` takes
the user's configs and returns a :class:`LayerPlan` (plain data: what the
kernels need at run time) and the :class:`Structure` objects (SymPy: what code
generators need). Every broken node is reported in one ``FormulaParsingError``.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import warnings
import weakref
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import mpmath
import sympy as sp

from ..errors import CompilationWarning, FormulaParsingError, InternalError
from . import grammar
from .derivative import DerivativeProblem, differentiate
from .named import NAMED, UsedDefaults, is_named_for_mode, named_calls, whole_config_call
from .configs import normalize_config, shown
from .parser import FormulaSyntaxProblem, ParseContext, constant_name, names_in, parse
from .plan import LayerPlan
from .slots import to_slots
from .structure import ACTIVATION, MODES, VARIABLES, Structure, structure_key

ACTIVATION_ALIASES = ("num", "x", "z")


@dataclasses.dataclass(frozen=True)
class AnalyzedLayer:
    plan: LayerPlan
    structures: Tuple[Structure, ...]  # aligned with plan.structure_keys


@dataclasses.dataclass(frozen=True)
class _ParsedNode:
    key: str
    slot_names: Tuple[str, ...]
    named_defaults: Tuple[Tuple[str, float], ...]
    # Held here, so that a cached parse never outlives its structure (see _structures).
    structure: Structure = dataclasses.field(compare=False, repr=False)


def _variables(text: str, constants: Mapping[str, float], mode: str) -> Dict[str, sp.Symbol]:
    """Which names of ``text`` are the input variables (``x``/``z`` alias ``num`` when it is absent)."""
    symbols = VARIABLES[mode]
    if mode != ACTIVATION:
        return {s.name: s for s in symbols}
    used = names_in(text) if len(text) <= 10_000 else {}
    for alias in ACTIVATION_ALIASES:
        if alias in used and alias not in constants:
            return {alias: symbols[0]}
    return {"num": symbols[0]}


@functools.lru_cache(maxsize=4096)
def _parse_node(mode: str, text: str, constant_names: Tuple[str, ...]) -> _ParsedNode:
    stripped = text.strip()
    if stripped in NAMED:
        if not is_named_for_mode(stripped, mode):
            other = NAMED[stripped].kind
            raise FormulaSyntaxProblem(f"'{stripped}' is a named {other} formula; build the compiler "
                                       f"with mode='{other}' to use it as a whole config")
        text = whole_config_call(stripped, mode)
    variables = _variables(text, dict.fromkeys(constant_names), mode)
    for name in constant_names:
        if name in (v.name for v in VARIABLES[mode]) or name in variables:
            raise FormulaSyntaxProblem(f"'{name}' is an input variable, it cannot also be a constant")
    used = UsedDefaults()
    context = ParseContext(variables=variables, constants=set(constant_names), named=named_calls(used))
    expr = parse(text, context)
    for name, where in used.conflicts.items():
        if name not in constant_names:
            raise FormulaSyntaxProblem(f"{where} both use the constant '{name}' with different defaults; "
                                       f"give '{name}' a value in the node's dict")
    _check_constant_count(expr)
    bad = grammar.unsupported_nodes(expr)
    if bad:
        raise FormulaSyntaxProblem(f"the formula is undefined or complex-valued: it contains {bad[0]}")
    slotted, slot_names = to_slots(expr)
    key = structure_key(mode, slotted)
    structure = _remember_structure(key, mode, slotted, len(slot_names))
    defaults = tuple((n, d) for n, (d, _) in used.values.items())
    return _ParsedNode(key=key, slot_names=slot_names, named_defaults=defaults, structure=structure)


# Numbering slots canonically costs about the cube of the number of constants (seconds at 30,
# minutes at 200); real activations and losses use a handful.
MAX_CONSTANTS = 24


def _check_constant_count(expr: sp.Expr) -> None:
    names = sorted(n for n in map(constant_name, expr.free_symbols) if n is not None)
    if len(names) > MAX_CONSTANTS:
        raise FormulaSyntaxProblem(
            f"the formula uses {len(names)} constants ({', '.join(names[:3])}, ...); at most "
            f"{MAX_CONSTANTS} are supported per node: split it over several nodes or fold constants together")


# Weak: a Structure (SymPy expression and derivative, tens of KB) lives as long as a cached
# parse (the bounded lru_cache of _parse_node) or a layer uses it, and is shared meanwhile by
# every text with the same shape; one that is gone is derived again if a text needs it.
_structures: weakref.WeakValueDictionary[str, Structure] = weakref.WeakValueDictionary()


def _remember_structure(key: str, mode: str, expr: sp.Expr, n_slots: int) -> Structure:
    """One Structure (and one derivation) per key per process."""
    known = _structures.get(key)
    if known is None:
        try:
            derivative = differentiate(expr, VARIABLES[mode][0])
        except DerivativeProblem as exc:
            raise FormulaSyntaxProblem(str(exc)) from None
        known = _structures[key] = Structure(key=key, mode=mode, expr=expr,
                                             derivative=derivative, n_slots=n_slots)
    return known


#: Begins the error for a SymPy failure on a node that no check foresaw (a bug to fix).
UNFORESEEN_FAILURE = "SymPy failed on this formula in a way heterosymnn does not handle yet"


def analyze(configs: Sequence[Any], mode: str = ACTIVATION) -> AnalyzedLayer:
    """Parse, slot and differentiate every node of a layer.

    Raises
    ------
    FormulaParsingError
        Listing every broken node with its index and the offending piece.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if isinstance(configs, (str, bytes, bytearray)) or not isinstance(configs, Sequence) or len(configs) == 0:
        raise FormulaParsingError(
            "configs must be a non-empty list of node configs (a formula string or a "
            "(formula, constants_dict) pair per node)")
    problems: List[Tuple[Optional[int], str]] = []
    parsed: List[Tuple[_ParsedNode, Dict[str, float]]] = []
    for index, config in enumerate(configs):
        try:
            text, constants = normalize_config(config)
            node = _parse_node(mode, text, tuple(sorted(constants)))
        except FormulaSyntaxProblem as exc:
            problems.append((index, f"{exc} (in {_describe(config)})"))
            continue
        except RecursionError:
            problems.append((index, f"formula is too deeply nested (in {_describe(config)})"))
            continue
        except Exception as exc:  # noqa: BLE001 - a failure nothing above foresaw
            if not _raised_inside_sympy(exc):
                # Our own bug must not pass for the user's formula error.
                raise InternalError.wrapping(f"analysing node {index} ({_describe(config)})", exc) from exc
            # Still the user's node, named, with a way forward, rather than a traceback from
            # deep inside SymPy. The fuzz tests treat this message as a failure to fix.
            problems.append((index, f"{UNFORESEEN_FAILURE} ({type(exc).__name__}: {str(exc)[:160]}); "
                                    f"please report it with the formula; writing the formula "
                                    f"differently may avoid it (in {_describe(config)})"))
            continue
        parsed.append((node, constants))
        unused = sorted(set(constants) - set(node.slot_names))
        if unused:
            warnings.warn(f"node {index}: constant(s) {', '.join(unused)} given but not used by "
                          f"{_describe(config)}", CompilationWarning, stacklevel=3)
    if problems:
        raise FormulaParsingError.from_problems(problems)
    return _assemble(mode, parsed)


_SYMPY_FOLDERS = tuple(os.path.dirname(module.__file__) + os.sep for module in (sp, mpmath))


def _raised_inside_sympy(exc: BaseException) -> bool:
    """Whether ``exc`` was raised by SymPy's (or mpmath's) own code, not by heterosymnn's."""
    traceback = exc.__traceback__
    while traceback is not None and traceback.tb_next is not None:
        traceback = traceback.tb_next
    return traceback is not None and traceback.tb_frame.f_code.co_filename.startswith(_SYMPY_FOLDERS)


def _assemble(mode: str, parsed: List[Tuple[_ParsedNode, Dict[str, float]]]) -> AnalyzedLayer:
    keys: Dict[str, int] = {}
    structures: List[Structure] = []
    node_structure, node_slot_names, node_values = [], [], []
    for node, constants in parsed:
        index = keys.setdefault(node.key, len(keys))
        if index == len(structures):  # the first node of this structure
            structures.append(node.structure)
        defaults = dict(node.named_defaults)
        node_structure.append(index)
        node_slot_names.append(node.slot_names)
        node_values.append(tuple(constants[n] if n in constants else defaults[n] for n in node.slot_names))
    plan = LayerPlan(
        mode=mode,
        structure_keys=tuple(keys),
        structure_slots=tuple(s.n_slots for s in structures),
        node_structure=tuple(node_structure),
        node_slot_names=tuple(node_slot_names),
        node_values=tuple(node_values),
    )
    return AnalyzedLayer(plan=plan, structures=tuple(structures))


def _describe(config: Any) -> str:
    return shown(config)
