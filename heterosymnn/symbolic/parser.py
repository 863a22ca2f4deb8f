"""Safe parsing of formula text into SymPy expressions.

Formula text is user input and may come from files, so it never reaches
``eval``, ``sympify`` or ``parse_expr`` (all of which execute Python). Python's
``ast`` module only *parses*; this module walks the tree, accepts a whitelisted
grammar and builds the SymPy expression itself. Everything else is rejected
with a :class:`FormulaSyntaxProblem` that the caller turns into a
``FormulaParsingError`` naming the node.
"""
from __future__ import annotations

import ast
import dataclasses
import difflib
import keyword
import math
import re
from typing import Callable, Collection, Dict, List, Mapping, Optional, Tuple

import sympy as sp

from . import grammar
from .conditions import ConditionProblem, piecewise
from .configs import FormulaSyntaxProblem

MAX_TEXT_LENGTH = 10_000
MAX_DEPTH = 100
# Largest magnitude a literal may reach: beyond float64 it would print as inf.
MAX_MAGNITUDE = sp.Float(1.7976931348623157e308)
CONSTANT_PREFIX = "const:"




@dataclasses.dataclass(frozen=True)
class NamedCall:
    """How the parser expands a call to a named formula (supplied by ``named``)."""

    expand: Callable[[Tuple[sp.Expr, ...]], sp.Expr]
    arity: Tuple[int, int]  # (minimum, maximum) positional arguments


@dataclasses.dataclass(frozen=True)
class ParseContext:
    """Names a formula may use, resolved before parsing starts."""

    variables: Mapping[str, sp.Symbol]
    constants: Collection[str]
    named: Mapping[str, NamedCall]


def constant_symbol(name: str) -> sp.Symbol:
    """The placeholder symbol of a user constant (the prefix keeps it apart from variables)."""
    return sp.Symbol(CONSTANT_PREFIX + name, real=True)


def constant_name(symbol: sp.Symbol) -> Optional[str]:
    """The user's name for a constant placeholder, or None for any other symbol."""
    return symbol.name[len(CONSTANT_PREFIX):] if symbol.name.startswith(CONSTANT_PREFIX) else None


def parse(text: str, context: ParseContext) -> sp.Expr:
    """Parse ``text`` into a SymPy expression using only the names in ``context``.

    Raises
    ------
    FormulaSyntaxProblem
        For anything outside the formula grammar; the message names the
        offending piece and, for a typo, the closest known name.
    """
    if not isinstance(text, str):
        raise FormulaSyntaxProblem(f"a formula must be a string, got {type(text).__name__}")
    if len(text) > MAX_TEXT_LENGTH:
        raise FormulaSyntaxProblem(
            f"formula is {len(text)} characters long; at most {MAX_TEXT_LENGTH} are accepted")
    if not text.strip():
        raise FormulaSyntaxProblem("formula is empty")
    _check_characters(text)
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise FormulaSyntaxProblem(_syntax_message(exc, text)) from None
    except (RecursionError, MemoryError):
        raise FormulaSyntaxProblem(f"formula is nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # what Python's parser refuses outright (kept apart from nesting)
        raise FormulaSyntaxProblem(f"the text cannot be parsed as a formula: {exc}") from None
    _check_depth(tree)
    try:
        expr = _Builder(context, text).build(tree.body)
    except ConditionProblem as exc:
        raise FormulaSyntaxProblem(str(exc)) from None
    except NotImplementedError as exc:
        # SymPy gives up on some valid-looking combinations it builds itself.
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise FormulaSyntaxProblem(
            f"SymPy cannot build this formula ({reason[:160]}); give every Piecewise a final "
            f"(value, True) branch, or move the Piecewise out of the condition") from None
    if _is_condition(expr):
        raise FormulaSyntaxProblem("formula is a condition, not a number; conditions belong in Piecewise")
    return expr


def _check_characters(text: str) -> None:
    """Reject characters Python's parser would refuse with a misleading message (or none)."""
    if "\x00" in text:
        raise FormulaSyntaxProblem(
            f"formula contains a NUL character at position {text.index(chr(0))}; remove it")
    surrogate = _SURROGATE.search(text)
    if surrogate:
        raise FormulaSyntaxProblem(
            f"formula contains the lone surrogate {surrogate.group()!r} at position {surrogate.start()}, "
            f"which is not text (bytes decoded with errors='surrogateescape'?); decode the "
            f"formula as UTF-8 text first")


_SURROGATE = re.compile("[\ud800-\udfff]")


def _syntax_message(exc: SyntaxError, text: str) -> str:
    where = f" at column {exc.offset}" if exc.offset else ""
    if "integer string conversion" in str(exc.msg):
        # Python refuses int literals over 4300 digits; any such number overflows float64 anyway.
        return f"a number in the formula{where} has thousands of digits and overflows float64"
    hint = "; use ** for powers" if "^" in text else _keyword_hint(text)
    return f"invalid syntax{where}: {exc.msg}{hint}"


# Python keywords the formula grammar itself uses; any other keyword in a formula is a
# misused name (a constant called ``lambda`` cannot be written in Python syntax).
_GRAMMAR_KEYWORDS = {"and", "or", "not", "True", "False", "None", "if", "else"}


def _keyword_hint(text: str) -> str:
    words = set(re.findall(r"[A-Za-z_]\w*", text))
    misused = sorted(w for w in words if keyword.iskeyword(w) and w not in _GRAMMAR_KEYWORDS)
    if not misused:
        return ""
    return (f"; '{misused[0]}' is a Python keyword and cannot be a variable or constant name, "
            f"rename it (e.g. '{misused[0]}_')")


def _check_depth(tree: ast.AST) -> None:
    stack = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise FormulaSyntaxProblem(f"formula is nested deeper than {MAX_DEPTH} levels")
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


_BINARY = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
}
_COMPARE = {
    ast.Lt: sp.StrictLessThan, ast.LtE: sp.LessThan, ast.Gt: sp.StrictGreaterThan,
    ast.GtE: sp.GreaterThan, ast.Eq: sp.Eq, ast.NotEq: sp.Ne,
}
_REJECTED = {
    ast.Attribute: "attribute access", ast.Subscript: "a subscript", ast.Lambda: "a lambda",
    ast.ListComp: "a comprehension", ast.SetComp: "a comprehension", ast.DictComp: "a comprehension",
    ast.GeneratorExp: "a comprehension", ast.Dict: "a dict", ast.List: "a list", ast.Set: "a set",
    ast.Tuple: "a tuple", ast.IfExp: "a conditional expression (use Piecewise)",
    ast.JoinedStr: "a string", ast.NamedExpr: "an assignment", ast.Starred: "a starred argument",
    ast.Await: "await", ast.Yield: "yield", ast.YieldFrom: "yield", ast.Slice: "a slice",
}


class _Builder:
    """Walks a parsed tree and builds SymPy objects for the whitelisted nodes only."""

    def __init__(self, context: ParseContext, text: str):
        self.context = context
        self.text = text

    def build(self, node: ast.AST, condition_allowed: bool = False):
        method = getattr(self, "_" + type(node).__name__, None)
        if method is None:
            what = _REJECTED.get(type(node), f"a '{type(node).__name__}' expression")
            raise FormulaSyntaxProblem(f"{what} is not allowed in formulas: {self._piece(node)}")
        try:
            result = method(node)
        except (TypeError, ValueError, ArithmeticError) as exc:
            # SymPy refusing a combination (e.g. a condition inside arithmetic).
            raise FormulaSyntaxProblem(f"'{self._piece(node)}' is not a valid expression: {exc}") from None
        if _is_condition(result) and not condition_allowed:
            raise FormulaSyntaxProblem(
                f"the condition '{self._piece(node)}' can only be used as a Piecewise condition")
        return result

    def _piece(self, node: ast.AST) -> str:
        piece = ast.get_source_segment(self.text.strip(), node) or type(node).__name__
        return piece if len(piece) <= 60 else piece[:57] + "..."

    # -- leaves -------------------------------------------------------------------------
    def _Constant(self, node: ast.Constant):
        value = node.value
        if isinstance(value, bool):
            return sp.true if value else sp.false
        if isinstance(value, int):
            return _checked_number(sp.Integer(value), self._piece(node))
        if isinstance(value, float):
            if not math.isfinite(value):
                raise FormulaSyntaxProblem(f"the number {self._piece(node)} overflows float64")
            return sp.Float(repr(value), 17)
        if isinstance(value, complex):
            raise FormulaSyntaxProblem(f"complex numbers are not supported: {self._piece(node)}")
        if isinstance(value, (str, bytes)):
            raise FormulaSyntaxProblem(f"a string is not allowed in formulas: {self._piece(node)}")
        raise FormulaSyntaxProblem(f"'{self._piece(node)}' is not allowed in formulas")

    def _Name(self, node: ast.Name):
        name = node.id
        ctx = self.context
        if name in ctx.variables:
            return ctx.variables[name]
        if name in ctx.constants:
            return constant_symbol(name)
        if name in grammar.BUILTIN_CONSTANTS:
            return grammar.BUILTIN_CONSTANTS[name]
        if name in grammar.FUNCTIONS or name in ctx.named or name == grammar.PIECEWISE:
            raise FormulaSyntaxProblem(f"'{name}' is a function; call it, e.g. {name}(...)")
        known = list(ctx.variables) + list(ctx.constants) + list(grammar.BUILTIN_CONSTANTS)
        raise FormulaSyntaxProblem(
            f"unknown name '{name}': not a variable ({', '.join(ctx.variables)}) and no value "
            f"was given for it; give constants in the node's dict, e.g. "
            f"(\"a*sin(num)\", {{\"a\": 1.0}}){_suggest(name, known)}")

    # -- arithmetic ---------------------------------------------------------------------
    def _BinOp(self, node: ast.BinOp):
        if isinstance(node.op, ast.Pow):
            return self._power(node)
        if isinstance(node.op, ast.BitXor):
            raise FormulaSyntaxProblem(f"'^' is not a power in formulas; write ** instead: {self._piece(node)}")
        if isinstance(node.op, (ast.BitAnd, ast.BitOr)):
            left = self.build(node.left, condition_allowed=True)
            right = self.build(node.right, condition_allowed=True)
            return self._logic(sp.And if isinstance(node.op, ast.BitAnd) else sp.Or, [left, right], node)
        combine = _BINARY.get(type(node.op))
        if combine is None:
            raise FormulaSyntaxProblem(f"the operator in '{self._piece(node)}' is not supported; "
                                       f"use + - * / **")
        left, right = self.build(node.left), self.build(node.right)
        return _checked_number(combine(left, right), self._piece(node))

    def _power(self, node: ast.BinOp):
        base, exponent = self.build(node.left), self.build(node.right)
        if _is_constant(base) and _is_constant(exponent) and base != 0:
            # Estimate the size before SymPy computes it: 9**9**9**9 (or sqrt(2)**10**300,
            # which SymPy turns into an exact integer power) must fail at once. Both sides
            # are already known to be real and within float64.
            magnitude = abs(float(exponent)) * math.log10(max(abs(float(base)), 1e-300))
            if abs(magnitude) > 308 or abs(float(exponent)) > 10_000:
                raise FormulaSyntaxProblem(f"the number {self._piece(node)} overflows float64")
        return _checked_number(sp.Pow(base, exponent), self._piece(node))

    def _UnaryOp(self, node: ast.UnaryOp):
        if isinstance(node.op, ast.USub):
            return -self.build(node.operand)
        if isinstance(node.op, ast.UAdd):
            return self.build(node.operand)
        if isinstance(node.op, (ast.Not, ast.Invert)):
            return self._logic(sp.Not, [self.build(node.operand, condition_allowed=True)], node)
        raise FormulaSyntaxProblem(f"the operator in '{self._piece(node)}' is not supported")

    # -- conditions (Piecewise only) -----------------------------------------------------
    def _Compare(self, node: ast.Compare):
        parts = []
        left = self.build(node.left)
        for op, right_node in zip(node.ops, node.comparators):
            relation = _COMPARE.get(type(op))
            if relation is None:
                raise FormulaSyntaxProblem(f"the comparison in '{self._piece(node)}' is not supported")
            right = self.build(right_node)
            parts.append(relation(left, right))
            left = right
        return parts[0] if len(parts) == 1 else sp.And(*parts)

    def _BoolOp(self, node: ast.BoolOp):
        values = [self.build(v, condition_allowed=True) for v in node.values]
        return self._logic(sp.And if isinstance(node.op, ast.And) else sp.Or, values, node)

    def _logic(self, op, values: List, node: ast.AST):
        for value in values:
            if not _is_condition(value):
                raise FormulaSyntaxProblem(
                    f"'{self._piece(node)}' combines a number with a logical operator; "
                    f"only conditions such as num > 0 can be combined")
        return op(*values)

    # -- calls --------------------------------------------------------------------------
    def _Call(self, node: ast.Call):
        if not isinstance(node.func, ast.Name):
            raise FormulaSyntaxProblem(f"only calls of known functions are allowed: {self._piece(node)}")
        name = node.func.id
        if node.keywords:
            raise FormulaSyntaxProblem(f"keyword arguments are not allowed: {self._piece(node)}")
        if name == grammar.PIECEWISE:
            return self._piecewise(node)
        if name in self.context.named:
            call = self.context.named[name]
            args = tuple(self.build(a) for a in node.args)
            low, high = call.arity
            if not low <= len(args) <= high:
                raise FormulaSyntaxProblem(
                    f"{name} takes {low}{'' if low == high else f' to {high}'} argument(s), "
                    f"got {len(args)}: {self._piece(node)}")
            return _checked_number(call.expand(args), self._piece(node))
        if name not in grammar.FUNCTIONS:
            known = list(grammar.FUNCTIONS) + list(self.context.named) + [grammar.PIECEWISE]
            suggestion = _suggest(name, known) or (
                f"; supported: {', '.join(sorted(set(grammar.FUNCTIONS) | {grammar.PIECEWISE}))} "
                f"and the named formulas {', '.join(sorted(self.context.named))}")
            raise FormulaSyntaxProblem(f"unknown or unsupported function '{name}'{suggestion}")
        function, counts = grammar.FUNCTIONS[name]
        args = [self.build(a) for a in node.args]
        if counts is None and len(args) < 2:
            raise FormulaSyntaxProblem(f"{name} needs at least 2 arguments: {self._piece(node)}")
        if counts is not None and len(args) not in counts:
            raise FormulaSyntaxProblem(
                f"{name} takes {' or '.join(map(str, counts))} argument(s), got {len(args)}: "
                f"{self._piece(node)}")
        if function is sp.Heaviside and len(args) == 2 and not _is_constant(args[1]):
            # The value at 0 is a fixed number in every backend (NumPy's heaviside(x, h0) too).
            raise FormulaSyntaxProblem(
                f"the second argument of Heaviside is its value at 0 and must be a number such as "
                f"0, 0.5 or 1, not '{self._piece(node.args[1])}': {self._piece(node)}")
        if function is sp.Heaviside and len(args) == 2 and not isinstance(args[1], sp.Number):
            args[1] = _checked_number(args[1], self._piece(node.args[1])).evalf(17)  # 2*pi -> 6.28...
        return _checked_number(function(*args), self._piece(node))

    def _piecewise(self, node: ast.Call):
        if not node.args:
            raise FormulaSyntaxProblem("Piecewise needs (value, condition) pairs")
        pairs = []
        for arg in node.args:
            if not (isinstance(arg, ast.Tuple) and len(arg.elts) == 2):
                raise FormulaSyntaxProblem(
                    f"Piecewise arguments must be (value, condition) pairs: {self._piece(arg)}")
            value = self.build(arg.elts[0])
            condition = self.build(arg.elts[1], condition_allowed=True)
            if not _is_condition(condition):
                raise FormulaSyntaxProblem(
                    f"'{self._piece(arg.elts[1])}' is not a condition; use a comparison such as num > 0 "
                    f"or True")
            pairs.append((value, condition))
        try:
            return piecewise(pairs)
        except (TypeError, ValueError) as exc:
            raise FormulaSyntaxProblem(f"invalid Piecewise {self._piece(node)}: {exc}") from None


def _is_condition(value) -> bool:
    """True for relations and logic (SymPy symbols are Boolean too, but they are numbers here)."""
    return isinstance(value, sp.logic.boolalg.Boolean) and not isinstance(value, sp.Expr)


def _is_constant(value) -> bool:
    return isinstance(value, sp.Expr) and not value.free_symbols


def _checked_number(value, piece: str):
    """Reject a constant result that no float64 can hold.

    Checked as each node is built, so every constant reaching SymPy's own numeric
    evaluation (assumption queries, argument reduction of ``sin``) is a real
    number within float64: ``sin(exp(exp(100)))`` fails at ``exp(exp(100))``
    instead of making SymPy compute pi to 10**43 digits.
    """
    if not _is_constant(value):
        if isinstance(value, sp.Expr) and value.has(*_NON_FINITE):
            raise FormulaSyntaxProblem(f"'{piece}' is undefined (division by zero or an infinite value)")
        return value
    number = value if isinstance(value, sp.Number) else value.evalf(17)
    if not isinstance(number, sp.Number) or number.is_finite is not True:
        raise FormulaSyntaxProblem(f"'{piece}' is complex-valued or undefined")
    if abs(number) > MAX_MAGNITUDE:
        raise FormulaSyntaxProblem(f"the number {piece} overflows float64")
    return value


_NON_FINITE = (sp.zoo, sp.nan, sp.oo, -sp.oo)


def _suggest(name: str, known: List[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if not close:
        close = [k for k in known if k.lower() == name.lower()]
    return f"; did you mean '{close[0]}'?" if close else ""


def names_in(text: str) -> Dict[str, int]:
    """Bare names used in ``text`` (not called), with counts; empty on a syntax error.

    Used to pick the variable alias (num, else x, else z) before parsing.
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, RecursionError, MemoryError, ValueError):
        return {}
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    counts: Dict[str, int] = {}
    for n in ast.walk(tree):
        if isinstance(n, ast.Name) and id(n) not in called:
            counts[n.id] = counts.get(n.id, 0) + 1
    return counts
