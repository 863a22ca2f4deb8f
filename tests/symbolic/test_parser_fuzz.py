"""Hostile and broken text: every input ends in a working compiler or a FormulaParsingError.

Random bytes, random Python-like text (attribute access, lambdas, comprehensions,
``__import__`` payloads, huge numbers, deep nesting, NUL bytes, unicode), mutations
and splices of valid formulas, and random constants dicts are all fed to
``SymbolicJITCompiler``. Each must, within a few seconds, either build kernels
that run forward and backward, or raise ``FormulaParsingError`` naming the node;
nothing in the text may ever be executed (a sentinel file must never appear and
``eval``/``exec``/``compile`` must never see it).
"""
from __future__ import annotations

import ast
import builtins
import contextlib
import math
import time
import warnings
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import event, example, given, settings, strategies as st
from hypothesis.errors import InvalidArgument

from heterosymnn import FormulaParsingError, SymbolicJITCompiler
from heterosymnn.symbolic import grammar
from heterosymnn.symbolic.layer import MAX_CONSTANTS, UNFORESEEN_FAILURE
from heterosymnn.symbolic.named import NAMED
from corpus import ACTIVATIONS, LOSSES
from fuzzing import deadline, examples

SECONDS_PER_INPUT = 5.0
SENTINEL_NAME = "SENTINEL"
# Stands for the sentinel's absolute path in generated text; replaced per test run.
SENTINEL = "@SENTINEL@"


# -- the property every input must satisfy ---------------------------------------------------

class ExecutionSpy:
    """Records the source text that reaches eval, exec and compile while a compiler is built.

    ``ast.parse`` calls ``compile`` with ``PyCF_ONLY_AST``: that only parses and is
    allowed. SymPy's ``lambdify`` execs code printed from a validated tree, never
    user text, so it is allowed too, provided no payload of ours appears in it.
    Code objects (lazy imports) are not text and are not recorded.
    """

    def __init__(self):
        self.executed: list[str] = []

    def record(self, source) -> None:
        if isinstance(source, (str, bytes)):
            self.executed.append(source if isinstance(source, str) else source.decode("latin-1"))

    @contextlib.contextmanager
    def watching(self):
        real = builtins.eval, builtins.exec, builtins.compile

        def spy(function):
            def wrapper(source, *args, **kwargs):
                self.record(source)
                return function(source, *args, **kwargs)
            return wrapper

        def spy_compile(source, filename="<unknown>", mode="exec", flags=0, *args, **kwargs):
            if not flags & ast.PyCF_ONLY_AST:
                self.record(source)
            return real[2](source, filename, mode, flags, *args, **kwargs)

        builtins.eval, builtins.exec, builtins.compile = spy(real[0]), spy(real[1]), spy_compile
        try:
            yield
        finally:
            builtins.eval, builtins.exec, builtins.compile = real


@pytest.fixture
def arena(tmp_path, monkeypatch):
    """A working directory holding nothing but where a payload would write its sentinel."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    assert not (tmp_path / SENTINEL_NAME).exists(), "a formula was executed: the sentinel file exists"
    assert list(tmp_path.iterdir()) == [], "a formula wrote a file"


def with_sentinel(config, where: Path):
    if isinstance(config, str):
        return config.replace(SENTINEL, str(where / SENTINEL_NAME))
    return config


def build_and_run(configs, mode: str = "activation"):
    """Build the compiler and run both kernels once; FormulaParsingError passes through."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unused constants, numpy overflow: allowed, not failures
        comp = SymbolicJITCompiler(configs, "CPU_PYTHON", mode=mode)
        with np.errstate(all="ignore"):
            if mode == "loss":
                shape = (3,) if comp.n_nodes == 1 else (comp.n_nodes, 3)
                y_pred = np.linspace(-1.5, 2.5, math.prod(shape), dtype=np.float32).reshape(shape)
                y_true = np.full(shape, 0.5, np.float32)
                forward = comp.forward_kernel(y_pred, y_true)
                backward = comp.backward_kernel(y_pred, y_true)
            else:
                z = np.tile(np.array([-1.5, 0.0, 0.5, 2.5], np.float32), (comp.n_nodes, 1))
                forward = comp.forward_kernel(z)
                backward = comp.backward_kernel(z, np.ones_like(z))
    assert forward.shape == backward.shape and forward.dtype == np.float32
    return comp


def record(outcome: str) -> None:
    """Count the outcome in Hypothesis's statistics (plain regression tests have none)."""
    try:
        event(outcome)
    except InvalidArgument:
        pass


def check_outcome(config, where: Path, mode: str = "activation"):
    """One config after a valid neighbour: a working compiler, or an error naming node 1 only."""
    config = with_sentinel(config, where)
    spy = ExecutionSpy()
    start = time.perf_counter()
    try:
        with spy.watching(), deadline(SECONDS_PER_INPUT, config):
            build_and_run(["sin(num)" if mode == "activation" else "mse", config], mode)
        record("built and ran")
    except FormulaParsingError as error:
        record("rejected")
        assert [index for index, _ in error.problems] == [1], str(error)
        assert str(error).startswith("node 1: ") and len(str(error)) > len("node 1: ") + 10, str(error)
        assert UNFORESEEN_FAILURE not in str(error), str(error)
        text = config.strip() if isinstance(config, str) else ""
        if len(text) >= 8:  # shorter texts (num, 2*num) occur in SymPy's own generated code
            leaked = [source for source in spy.executed if text in source]
            assert leaked == [], f"rejected text reached eval/exec/compile: {leaked[:1]}"
    elapsed = time.perf_counter() - start
    assert elapsed < SECONDS_PER_INPUT, f"{elapsed:.1f} s for {config!r:.200}"
    leaked = [source for source in spy.executed if any(mark in source for mark in PAYLOAD_MARKS)]
    assert leaked == [], f"user text reached eval/exec/compile: {leaked[:1]}"


# -- random bytes, decoded every way a user could ------------------------------------------------

def decodings(data: bytes):
    yield data
    yield bytearray(data)
    for errors in ("replace", "surrogateescape", "ignore", "backslashreplace"):
        yield data.decode("utf-8", errors=errors)
    yield data.decode("latin-1")
    yield (data.decode("utf-8", errors="surrogateescape"), {})


@settings(max_examples=examples(80))
@given(st.binary(max_size=64))
@example(b"num\x00")
@example(b"sin(num)\xff")  # a lone surrogate after surrogateescape
@example(b"\xed\xa0\x80")  # an encoded surrogate: not UTF-8
@example(b"1" * 5000)  # past Python's 4300-digit int limit
@pytest.mark.filterwarnings("ignore")
def test_random_bytes_build_or_fail_cleanly(arena, data):
    for config in decodings(data):
        check_outcome(config, arena)


# -- random Python-like text --------------------------------------------------------------------

PAYLOADS = [
    f"__import__('os').system('touch {SENTINEL}')",
    f"__import__('pathlib').Path('{SENTINEL}').touch()",
    f"open('{SENTINEL}', 'w')",
    f"exec(\"open('{SENTINEL}', 'w')\")",
    f"eval(\"open('{SENTINEL}', 'w')\")",
    f"compile(\"open('{SENTINEL}', 'w')\", 'f', 'exec')",
    "().__class__.__bases__[0].__subclasses__()",
    "num.__class__.__mro__[-1].__subclasses__()",
    f"[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == 'Popen'][0]('touch {SENTINEL}')",
    f"(lambda: open('{SENTINEL}', 'w'))()",
    "globals()['__builtins__']",
    "breakpoint()",
    "help()",
]
# Pieces of the payloads that no code generated from a formula can contain.
PAYLOAD_MARKS = (SENTINEL_NAME, "__import__(", "__subclasses__")
DUNDERS = ["__import__", "__class__", "__builtins__", "__dict__", "__globals__", "__subclasses__", "__init__"]
IDENTIFIERS = (["num", "x", "z", "y_pred", "y_true", "a", "b", "pi", "e", "E", "tau", "phi", "oo", "nan",
                "zoo", "I", "S", "Symbol", "sympify", "os", "sys", "open", "eval", "exec", "print",
                "α", "ｎｕｍ", "ℌ", "ǅ", "_", "num_", "True", "False", "None"]
               + sorted(grammar.FUNCTIONS) + sorted(NAMED) + [grammar.PIECEWISE] + DUNDERS)
NUMBERS = ["0", "1", "2.5", "1e-3", "1e308", "1e999", "-0.0", "0x1F", "0b101", "0o17", "1_000", "1j", "3.j",
           "9" * 400, "1" * 4400, "2**1024", "9**9**9", "10**-400", ".5", "5.", "1e", "0_", "00"]
BINARY = ["+", "-", "*", "/", "**", "//", "%", "@", "&", "|", "^", "<<", ">>", "<", "<=", ">", ">=", "==",
          "!=", " and ", " or ", " is ", " in ", " not in "]
JUNK = ["(", ")", "[", "]", "{", "}", ",", ":", ";", ".", "\x00", "\\", "'", '"', "#", "\n", "\t", "`", "$",
        "?", "!", "=", "\u200b", "\ufeff", "\ud800", "ﬁ", "…", "−", "×"]


def python_like():
    leaves = st.one_of(st.sampled_from(IDENTIFIERS), st.sampled_from(NUMBERS), st.sampled_from(PAYLOADS),
                       st.integers(min_value=-10**30, max_value=10**30).map(str),
                       st.floats(allow_nan=False, allow_infinity=False).map(repr),
                       st.text(min_size=1, max_size=3).map(repr))

    def grow(inner):
        pair = st.tuples(inner, inner)
        return st.one_of(
            st.tuples(inner, st.sampled_from(BINARY), inner).map("".join),
            st.tuples(st.sampled_from(["-", "+", "~", "not ", "*", "**", "await "]), inner).map("".join),
            st.tuples(st.sampled_from(IDENTIFIERS), st.lists(inner, max_size=4)).map(
                lambda t: f"{t[0]}({', '.join(t[1])})"),
            st.tuples(st.sampled_from(IDENTIFIERS), inner, st.sampled_from(IDENTIFIERS), inner).map(
                lambda t: f"{t[0]}({t[1]}, {t[2]}={t[3]})"),
            pair.map(lambda t: f"Piecewise(({t[0]}, {t[1]}), (0, True))"),
            inner.map(lambda s: f"({s})"),
            st.tuples(inner, st.sampled_from(DUNDERS + ["real", "imag", "func", "args"])).map(
                lambda t: f"{t[0]}.{t[1]}"),
            pair.map(lambda t: f"{t[0]}[{t[1]}]"),
            pair.map(lambda t: f"{t[0]}[{t[1]}:]"),
            inner.map(lambda s: f"lambda num: {s}"),
            pair.map(lambda t: f"[{t[0]} for num in {t[1]}]"),
            pair.map(lambda t: f"{{{t[0]}: {t[1]} for num in range(3)}}"),
            inner.map(lambda s: f"f'{{{s}}}'"),
            inner.map(lambda s: f"(num := {s})"),
            inner.map(lambda s: f"max(*{s})"),
            inner.map(lambda s: f"max(**{s})"),
            st.tuples(inner, inner, inner).map(lambda t: f"{t[0]} if {t[1]} else {t[2]}"),
            st.tuples(inner, st.sampled_from(JUNK), st.integers(0, 100)).map(
                lambda t: t[0][:t[2]] + t[1] + t[0][t[2]:]),  # unbalanced brackets, stray bytes
            st.tuples(inner, st.integers(1, 120), st.sampled_from(["sin(", "(", "-", "exp(", "[", "Max(num,"])).map(
                lambda t: t[2] * t[1] + t[0] + {"(": ")", "[": "]"}.get(t[2][-1], "") * t[1]),
        )

    return st.recursive(leaves, grow, max_leaves=12)


@settings(max_examples=examples(200))
@given(python_like())
@example("__import__('os').system('touch @SENTINEL@')")
@example("().__class__.__bases__[0].__subclasses__()")
@example("sin(num)" + "\x00")
@example("sin(num" * 40)
@example("num + " * 1700 + "num")
@example("(" * 1000 + "num")
@example("[" * 200 + "num" + "]" * 200)
@example("f'{__import__(\"os\").system(\"touch @SENTINEL@\")}'")
@example("1" * 4400 + "*num")
@example("not num")
@example("~(num > 0)")
def test_python_like_text_builds_or_fails_cleanly(arena, text):
    check_outcome(text, arena)


@settings(max_examples=examples(60))
@given(python_like())
def test_python_like_text_as_a_loss_builds_or_fails_cleanly(arena, text):
    check_outcome(text, arena, mode="loss")


def formula_like():
    """Text inside the grammar, so that SymPy, not the parser, meets the awkward cases."""
    unary = sorted(name for name, (_, counts) in grammar.FUNCTIONS.items() if counts and 1 in counts)
    leaves = st.one_of(st.sampled_from(["num", "num", "num", "pi", "e", "0", "1", "-1", "2", "0.5", "1e-300",
                                        "1e300", "1e308", "709", "710", "True"]),
                       st.floats(allow_nan=False, allow_infinity=False).map(repr))

    def grow(inner):
        return st.one_of(
            st.tuples(inner, st.sampled_from(["+", "-", "*", "/", "**"]), inner).map(lambda t: f"({''.join(t)})"),
            st.tuples(st.sampled_from(unary), inner).map(lambda t: f"{t[0]}({t[1]})"),
            st.tuples(st.sampled_from(["Max", "Min", "log", "Heaviside"]), inner, inner).map(
                lambda t: f"{t[0]}({t[1]}, {t[2]})"),
            st.tuples(st.sampled_from(sorted(n for n, f in NAMED.items() if f.kind == "activation")),
                      inner).map(lambda t: f"{t[0]}({t[1]})"),
            st.tuples(inner, st.sampled_from(["<", "<=", ">", ">=", "==", "!="]), inner, inner).map(
                lambda t: f"Piecewise(({t[3]}, {t[0]} {t[1]} {t[2]}), (num, True))"),
        )

    return st.recursive(leaves, grow, max_leaves=10)


@settings(max_examples=examples(120))
@given(formula_like())
@example("Min(num, Max(e, Min(num, pi)))")  # a hidden Max of constants inside a Min (derivative.py)
def test_formulas_inside_the_grammar_build_or_fail_cleanly(arena, text):
    check_outcome(text, arena)


# -- mutations of valid formulas -----------------------------------------------------------------

def corpus_formulas(entries):
    return [config if isinstance(config, str) else config[0] for config, *_ in entries]


ACTIVATION_TEXTS = sorted(set(corpus_formulas(ACTIVATIONS))
                          | {f.text for f in NAMED.values() if f.kind == "activation"})
LOSS_TEXTS = sorted(set(corpus_formulas(LOSSES)) | {f.text for f in NAMED.values() if f.kind == "loss"})
TOKENS = (["num", "x", "y_pred", "y_true", "(", ")", ",", "*", "**", "/", "+", "-", "<", ">=", "True",
           "0", "1", "1e400", "-1", "0.5"] + sorted(grammar.FUNCTIONS) + sorted(NAMED) + PAYLOADS[:3])


@st.composite
def mutated(draw, texts):
    text = draw(st.sampled_from(texts))
    for _ in range(draw(st.integers(1, 4))):
        cut = draw(st.integers(0, len(text)))
        end = draw(st.integers(cut, min(len(text), cut + 8)))
        kind = draw(st.sampled_from(["insert", "delete", "replace", "duplicate", "token", "splice"]))
        if kind == "insert":
            text = text[:cut] + draw(st.characters()) + text[cut:]
        elif kind == "delete":
            text = text[:cut] + text[end:]
        elif kind == "replace":
            text = text[:cut] + draw(st.sampled_from(JUNK + TOKENS)) + text[end:]
        elif kind == "duplicate":
            text = text[:end] + text[cut:end] + text[end:]
        elif kind == "token":
            text = text[:cut] + f" {draw(st.sampled_from(TOKENS))} " + text[cut:]
        else:  # splice: the head of this formula onto the tail of another
            other = draw(st.sampled_from(texts))
            text = text[:cut] + other[draw(st.integers(0, len(other))):]
    return text


@settings(max_examples=examples(150))
@given(mutated(ACTIVATION_TEXTS))
@example("Piecewise((num, num > 0), (alpha*num, True)")
@example("num/(1 + exp(-beta*num))")  # constants of a named formula are not constants of the text
@example("Max(num, 0) (num)")
def test_mutated_activations_build_or_fail_cleanly(arena, text):
    check_outcome(text, arena)


@settings(max_examples=examples(60))
@given(mutated(LOSS_TEXTS))
def test_mutated_losses_build_or_fail_cleanly(arena, text):
    check_outcome(text, arena, mode="loss")


# -- random constants dicts ----------------------------------------------------------------------

AWKWARD_NAMES = ["a", "b", "alpha", "beta", "num", "x", "z", "y_true", "pi", "e", "sin", "relu", "Piecewise",
                 "lambda", "None", "True", "", " ", "a b", "1a", "a-b", "α", "ℌ", "ﬁ", "\ud800", "__import__",
                 "__class__", "p0", "const:a", "nan", "oo", "I"]
NAME_KEYS = st.one_of(st.sampled_from(AWKWARD_NAMES), st.text(max_size=4), st.integers(), st.none(),
                      st.binary(max_size=3), st.tuples(st.integers()))
VALUES = st.one_of(
    st.floats(), st.integers(), st.booleans(), st.text(max_size=3), st.none(),
    st.sampled_from([10**400, -10**5000, Fraction(10**400, 3), Fraction(1, 3), Decimal("1.5"), Decimal("nan"),
                     1 + 2j, np.float32("nan"), np.float64(np.inf), np.int64(-7), np.float16(65504), [1.0], {}]),
)


@st.composite
def formulas_with_constants(draw):
    constants = draw(st.dictionaries(NAME_KEYS, VALUES, max_size=5))
    names = [k for k in constants if isinstance(k, str)] + draw(st.lists(st.sampled_from(AWKWARD_NAMES),
                                                                         max_size=2))
    terms = [f"{name}*{draw(st.sampled_from(['num', 'sin(num)', 'num**2', '1']))}" for name in names]
    text = " + ".join(terms) or draw(st.sampled_from(ACTIVATION_TEXTS))
    return draw(st.sampled_from([(text, constants), [text, constants], (text,), (text, None)]))


@settings(max_examples=examples(120))
@given(formulas_with_constants())
@example(("a*num", {"a": 10**400}))
@example(("a*num", {"a": -10**5000}))  # too many digits even to print
@example(("a*num", {"a": Fraction(10**400, 3)}))
@example(("ℌ*num", {"ℌ": 1.0}))  # Python reads the name as 'H'
@example(("a*num", {"a": np.float32("nan")}))
@example(("a*num", {"a": True}))
@example(("num", {10**5000: 1.0}))
@example(("leaky_relu", {"alpha": "0.1"}))
def test_random_constants_build_or_fail_cleanly(arena, config):
    check_outcome(config, arena)


# -- what the fuzzer found, as plain regressions ----------------------------------------------

def rejection(config, mode="activation") -> str:
    with pytest.raises(FormulaParsingError) as info:
        build_and_run([config], mode)
    return str(info.value)


@pytest.mark.parametrize("text, problem", [
    ("num\x00", "NUL character at position 3"),
    ("sin(num)\udcff", "lone surrogate '\\udcff' at position 8"),
    (b"sin(num)\xff".decode("utf-8", "surrogateescape"), "decode the formula as UTF-8"),
])
def test_characters_python_cannot_parse_are_named(text, problem):
    message = rejection(text)
    assert problem in message and "nested" not in message, message


def test_a_literal_over_pythons_digit_limit_is_an_overflow_not_a_setting_to_change():
    message = rejection("1" * 4400 + "*num")
    assert "overflows float64" in message and "set_int_max_str_digits" not in message, message


@pytest.mark.parametrize("value", [10**400, -10**5000, Fraction(10**400, 3)], ids=["int", "huge-int", "fraction"])
def test_a_constant_beyond_float64_is_rejected_not_an_overflow_error(value):
    message = rejection(("a*num", {"a": value}))
    assert "constant 'a' must be a finite float64" in message, message


def test_a_constant_name_python_would_rename_is_refused_with_the_name_it_reads():
    message = rejection(("ℌ*num", {"ℌ": 1.0}))
    assert "read as 'H'" in message and "use 'H' as the key" in message, message


@pytest.mark.parametrize("configs", [3, None, bytearray(b"relu")])
def test_configs_that_are_not_a_list_are_a_formula_error(configs):
    with pytest.raises(FormulaParsingError, match="non-empty list of node configs"):
        SymbolicJITCompiler(configs, "CPU_PYTHON")


def test_too_many_constants_are_refused_at_once():
    names = [f"c{i}" for i in range(MAX_CONSTANTS + 1)]
    formula = " + ".join(f"{name}*num**{i}" for i, name in enumerate(names))
    start = time.perf_counter()
    message = rejection((formula, dict.fromkeys(names, 1.0)))
    assert time.perf_counter() - start < SECONDS_PER_INPUT
    assert f"uses {MAX_CONSTANTS + 1} constants" in message and f"at most {MAX_CONSTANTS}" in message, message


def test_the_most_constants_allowed_still_build():
    names = [f"c{i}" for i in range(MAX_CONSTANTS)]
    comp = build_and_run([(" + ".join(f"{name}*num**{i % 4}" for i, name in enumerate(names)),
                           dict.fromkeys(names, 0.5))])
    assert comp.constants == [dict.fromkeys(names, 0.5)]


@pytest.mark.parametrize("formula", ["Heaviside(num, num)", "Heaviside(tan(num), num + num)"])
def test_heavisides_value_at_zero_must_be_a_number(formula):
    message = rejection(formula)
    assert "second argument of Heaviside is its value at 0 and must be a number" in message, message


def test_a_number_as_heavisides_value_at_zero_still_builds():
    build_and_run(["Heaviside(num, 0.25)", ("Heaviside(num, 2*pi)", {})])


def test_set_constants_refuses_an_int_beyond_float64():
    comp = build_and_run([("a*num", {"a": 1.0})])
    with pytest.raises(ValueError, match="'a' must be a finite real number"):
        comp.set_constants(0, a=10**400)



@pytest.mark.parametrize("formula", [
    "log(softplus(1.8347912203750207e+165), 2)", "Min(pi, softplus(-4.444558799913873e+16))",
    "mish(-2.176613465253847e+61)",
    "mish(num + (1e300-num))",  # found by the long profile: SymPy cancels num, the argument is constant
])
def test_a_named_formula_of_an_extreme_constant_finishes(formula, arena):
    # SymPy's log1p(Float) turned exp(-1.8e165) into an exact fraction first and never finished;
    # the grammar's log1p and expm1 fold float arguments with mpmath.
    check_outcome(formula, arena)
