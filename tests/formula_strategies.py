"""Hypothesis strategies for random formulas, layers and inputs over the whole formula language.

A formula is built as text, the way a user writes it: every function of
``grammar.FUNCTIONS``, Piecewise with several branches and relational,
chained, ``&``/``|``/``and``/``or``/``not`` conditions, powers with integer,
negative, fractional, constant and variable exponents, named formulas called
inside formulas (``relu(num)``, ``leaky_relu(num, 0.3)``), built-in constants
and user constants with awkward names (``beta``, ``gamma``, ``E``, ``S``, ``N``,
``I``, unicode) and awkward values (0, negative, 1e-30, 1e30).

Usage::

    @given(layer=layers("activation"))
    def test_something(layer): ...   # layer.configs, layer.mode

Inputs (:func:`input_arrays`) mix ordinary values with +-0, NaN, +-inf,
denormals, values that overflow ``exp`` and values at typical kinks.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, FrozenSet, List, Optional, Sequence, Tuple

import numpy as np
from hypothesis import strategies as st

from heterosymnn.symbolic.grammar import FUNCTIONS
from heterosymnn.symbolic.named import NAMED

#: Variables of each mode; an activation formula spells its variable one of three ways.
ACTIVATION_SPELLINGS = ("num", "x", "z")
LOSS_VARIABLES = ("y_pred", "y_true")

#: Constant names a user may pick that are easy to get wrong: SymPy singletons and functions
#: (S, N, I, E, O, Q, gamma, beta), built-ins a node may override (e, pi), named-formula
#: defaults (alpha, delta), unicode identifiers. ``lambda`` is a keyword and cannot be written.
CONSTANT_NAMES = ("a", "b", "w", "beta", "gamma", "E", "S", "N", "I", "O", "Q", "e", "pi",
                  "alpha", "delta", "c_1", "α", "λ", "Ω")
#: Values a constant takes: ordinary, zero, negative, tiny and huge.
CONSTANT_VALUES = st.one_of(
    st.sampled_from([0.0, 1.0, -1.0, 0.5, -2.5, 3.0, 1e-30, -1e-30, 1e30, -1e30, 0.3]),
    st.floats(-10, 10, allow_nan=False, width=32),
)
#: Literal numbers written in formulas.
LITERALS = ("0", "1", "2", "3", "0.5", "2.5", "-3.75", "1e-30", "1e30", "0.1", "(1/3)",
            "pi", "e", "E", "tau", "phi", "7", "1e-7")
#: Exponents of ``u**k``: integers (expanded into products up to 4), negative, fractional.
EXPONENTS = ("2", "3", "4", "5", "-1", "-2", "-3", "-4", "0.5", "-0.5", "(1/3)", "2.5", "(-1/2)",
             "1.5", "0", "1")

UNARY = tuple(sorted(name for name, (_, counts) in FUNCTIONS.items() if counts and 1 in counts))
VARIADIC = tuple(sorted(name for name, (_, counts) in FUNCTIONS.items() if counts is None))
RELATIONS = ("<", "<=", ">", ">=", "==", "!=")


@dataclasses.dataclass(frozen=True)
class Piece:
    """A formula fragment: its text (variables as ``{v0}``, ``{v1}``) and the constants it uses."""

    text: str
    constants: FrozenSet[str] = frozenset()

    @staticmethod
    def join(template: str, *parts: "Piece") -> "Piece":
        used = frozenset().union(*(p.constants for p in parts)) if parts else frozenset()
        return Piece(template.format(*(p.text for p in parts)), used)


@dataclasses.dataclass(frozen=True)
class Layer:
    """A random layer: one config per node, with the mode it is written for."""

    mode: str
    configs: Tuple[object, ...]

    def __repr__(self) -> str:  # what Hypothesis prints for a failing example, ready to paste
        return f"Layer(mode={self.mode!r}, configs={self.configs!r})"


def _variables(mode: str) -> Tuple[str, ...]:
    return ("{v0}",) if mode == "activation" else ("{v0}", "{v1}")


def _leaves(mode: str) -> st.SearchStrategy[Piece]:
    variables = st.sampled_from(_variables(mode)).map(Piece)
    constants = st.sampled_from(CONSTANT_NAMES).map(lambda name: Piece(name, frozenset({name})))
    literals = st.sampled_from(LITERALS).map(Piece)
    # Mostly variables: a formula of literals alone is rejected (or constant-folded) by the parser.
    return st.one_of(variables, variables, variables, constants, literals)


def _named_call(mode: str, inner: st.SearchStrategy[Piece]) -> st.SearchStrategy[Piece]:
    @st.composite
    def call(draw):
        name = draw(st.sampled_from(sorted(NAMED)))
        formula = NAMED[name]
        n_vars = 1 if formula.kind == "activation" else 2
        n_extra = draw(st.integers(0, len(formula.defaults)))
        args = [draw(inner) for _ in range(n_vars)]
        args += [draw(st.sampled_from(["0.3", "2", "1e-30"]).map(Piece) | _leaves(mode)) for _ in range(n_extra)]
        return Piece.join(f"{name}(" + ", ".join(["{}"] * len(args)) + ")", *args)
    return call()


def _condition(mode: str, inner: st.SearchStrategy[Piece]) -> st.SearchStrategy[Piece]:
    relation = st.builds(lambda a, op, b: Piece.join(f"{{}} {op} {{}}", a, b),
                         inner, st.sampled_from(RELATIONS), inner | st.sampled_from(LITERALS).map(Piece))
    chained = st.builds(lambda lo, a, hi: Piece.join(f"{lo} < {{}} <= {hi}", a),
                        st.sampled_from(["-1", "0", "-0.5"]), inner, st.sampled_from(["1", "2", "0.5"]))
    simple = relation | chained
    combined = st.one_of(
        st.builds(lambda a, b: Piece.join("({}) & ({})", a, b), simple, simple),
        st.builds(lambda a, b: Piece.join("({}) | ({})", a, b), simple, simple),
        st.builds(lambda a, b: Piece.join("({}) and ({})", a, b), simple, simple),
        st.builds(lambda a, b: Piece.join("({}) or ({})", a, b), simple, simple),
        st.builds(lambda a: Piece.join("not ({})", a), simple),
        st.builds(lambda a: Piece.join("~({})", a), simple),
    )
    return st.one_of(simple, simple, combined)


def _piecewise(mode: str, inner: st.SearchStrategy[Piece]) -> st.SearchStrategy[Piece]:
    @st.composite
    def piecewise(draw):
        n = draw(st.integers(1, 3))
        parts: List[Piece] = []
        for _ in range(n):
            parts += [draw(inner), draw(_condition(mode, inner))]
        template = ", ".join(["({}, {})"] * n)
        if draw(st.booleans()) or n == 1:  # usually a default branch; without one: NaN outside
            parts.append(draw(inner))
            template += ", ({}, True)"
        return Piece.join(f"Piecewise({template})", *parts)
    return piecewise()


def _extend(mode: str, inner: st.SearchStrategy[Piece]) -> st.SearchStrategy[Piece]:
    unary = st.builds(lambda f, a: Piece.join(f"{f}({{}})", a), st.sampled_from(UNARY), inner)
    binary = st.builds(lambda a, op, b: Piece.join(f"({{}}) {op} ({{}})", a, b),
                       inner, st.sampled_from(["+", "-", "*", "/"]), inner)
    power = st.builds(lambda a, k: Piece.join(f"({{}})**{k}", a), inner, st.sampled_from(EXPONENTS))
    general_power = st.builds(lambda a, b: Piece.join("({})**({})", a, b), inner, inner)
    variadic = st.builds(lambda f, args: Piece.join(f"{f}(" + ", ".join(["{}"] * len(args)) + ")", *args),
                         st.sampled_from(VARIADIC), st.lists(inner, min_size=2, max_size=3))
    two_argument = st.one_of(
        st.builds(lambda a, b: Piece.join("log({}, {})", a, b), inner, st.sampled_from(["2", "10", "0.5"]).map(Piece)),
        st.builds(lambda a, h: Piece.join(f"Heaviside({{}}, {h})", a), inner, st.sampled_from(["0", "1", "0.5"])),
    )
    negation = st.builds(lambda a: Piece.join("-({})", a), inner)
    return st.one_of(unary, unary, binary, binary, power, general_power, variadic, two_argument,
                     negation, _piecewise(mode, inner), _named_call(mode, inner))


def expressions(mode: str = "activation", max_leaves: int = 8) -> st.SearchStrategy[Piece]:
    """Formulas over ``{v0}`` (and ``{v1}`` for losses), nested but of bounded size.

    The outermost node is always an operation and the variable always appears: a bare
    leaf or a formula of constants alone tests little.
    """
    inner = st.recursive(_leaves(mode), lambda inner: _extend(mode, inner), max_leaves=max_leaves)
    return _extend(mode, inner).filter(lambda piece: "{v0}" in piece.text)


@st.composite
def node_configs(draw, mode: str = "activation", max_leaves: int = 8,
                 piece: Optional[Piece] = None) -> Tuple[str, Dict[str, float]]:
    """One node config ``(text, constants)``: a random formula with values for its constants."""
    if piece is None:
        piece = draw(expressions(mode, max_leaves))
    if mode == "activation":
        spelling = draw(st.sampled_from(ACTIVATION_SPELLINGS))
        text = piece.text.format(v0=spelling)
    else:
        text = piece.text.format(v0=LOSS_VARIABLES[0], v1=LOSS_VARIABLES[1])
    constants = {name: draw(CONSTANT_VALUES) for name in sorted(piece.constants)}
    return text, constants


@st.composite
def layers(draw, mode: str = "activation", min_nodes: int = 1, max_nodes: int = 12,
           max_formulas: int = 6, max_leaves: int = 8) -> Layer:
    """A layer mixing a few random formulas; a formula used by several nodes shares its
    structure while each node draws its own constant values."""
    formulas = draw(st.lists(expressions(mode, max_leaves), min_size=1, max_size=max_formulas))
    n_nodes = draw(st.integers(min_nodes, max_nodes))
    configs = []
    for _ in range(n_nodes):
        piece = draw(st.sampled_from(formulas))
        text, constants = draw(node_configs(mode, piece=piece))
        configs.append((text, constants) if constants or draw(st.booleans()) else text)
    return Layer(mode, tuple(configs))


#: Input values that break naive code: signed zeros, NaN, infinities, denormals of both
#: dtypes, values past exp's overflow (88.7 in float32, 709.8 in float64), huge and tiny.
SPECIAL_INPUTS = (0.0, -0.0, np.nan, np.inf, -np.inf, 1.0, -1.0, 0.5, -0.5, 2.0, -2.0,
                  5e-324, -5e-324, 1e-310, 1e-40, -1e-45, 1e-30, 88.0, 89.0, -104.0, 710.0, -746.0,
                  1e10, -1e10, 1e30, -1e30, 3.4e38, 1e300, -1e300, 1e-7, 0.999, 1.001, 3.0, -3.0)


def input_values(dtype: str) -> st.SearchStrategy[float]:
    """One input element: a special value, an ordinary one, or any float of the dtype."""
    width = 32 if dtype == "float32" else 64
    return st.one_of(
        st.sampled_from(SPECIAL_INPUTS),
        st.floats(-5, 5, width=width),
        st.floats(-5, 5, width=width),
        st.floats(width=width),
    )


#: Batch sizes: none (1-D input), empty, one, small odd, and one past a SIMD width.
BATCHES = (None, 0, 1, 3, 7, 17)


@st.composite
def input_arrays(draw, n_rows: int, dtype: str, batch: Optional[int] = None,
                 count: int = 1) -> Tuple[np.ndarray, ...]:
    """``count`` arrays of shape ``(n_rows,)`` (batch None) or ``(n_rows, batch)``."""
    shape = (n_rows,) if batch is None else (n_rows, batch)
    size = int(np.prod(shape))
    arrays = []
    for _ in range(count):
        values = draw(st.lists(input_values(dtype), min_size=size, max_size=size))
        with np.errstate(over="ignore"):
            arrays.append(np.array(values, dtype=np.float64).astype(dtype).reshape(shape))
    return tuple(arrays)


def batches() -> st.SearchStrategy[Optional[int]]:
    return st.sampled_from(BATCHES)


def grid(values: Sequence[float], n_rows: int, dtype: str) -> np.ndarray:
    """The same row of ``values`` for every node: ``(n_rows, len(values))``."""
    with np.errstate(over="ignore"):
        row = np.asarray(values, dtype=np.float64).astype(dtype)
    return np.ascontiguousarray(np.tile(row, (n_rows, 1)))
