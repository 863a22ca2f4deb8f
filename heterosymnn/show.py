"""``python -m heterosymnn show FORMULA...``: what heterosymnn makes of formulas.

For each formula: the parsed expression, its derivative, the structure key and
the constant slots (with given values or named-formula defaults); then the
source generated for the chosen target. The first thing to run when a formula
behaves unexpectedly.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from typing import Dict, List, Optional, Sequence, TextIO, Tuple

import sympy as sp

from .errors import BackendUnavailableError, CompilationWarning, FormulaParsingError
from .source import TARGETS, render_source


def _constant(text: str) -> Tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        if not sep or not name.strip():
            raise ValueError
        return name.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE with a number, got {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="heterosymnn show", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("formulas", nargs="+", metavar="FORMULA", help='e.g. "a*sin(w*num)" or relu')
    parser.add_argument("--mode", choices=("activation", "loss"), default="activation")
    parser.add_argument("--target", choices=TARGETS, default="c")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--const", type=_constant, action="append", default=[], metavar="NAME=VALUE",
                        help="a constant value, given to every formula that uses NAME (repeatable)")
    return parser


def _named(expr: sp.Expr, names: Sequence[str]) -> sp.Expr:
    """The slotted expression with its slots renamed back to the node's constants."""
    slots = {sp.Symbol(f"p{i}", real=True): sp.Symbol(name, real=True) for i, name in enumerate(names)}
    return expr.xreplace(slots)


def describe(formulas: Sequence[str], constants: Dict[str, float], mode: str, out: TextIO) -> List[tuple]:
    """Print what each formula parses to; returns the configs for :func:`render_source`."""
    from .symbolic.layer import analyze

    configs = [(text, dict(constants)) if constants else text for text in formulas]
    with warnings.catch_warnings():
        # --const values go to every formula; one that does not use a name is not a mistake.
        warnings.filterwarnings("ignore", message=r".*given but not used", category=CompilationWarning)
        layer = analyze(configs, mode)
    plan, used = layer.plan, set()
    for node, text in enumerate(formulas):
        index = plan.node_structure[node]
        structure, names = layer.structures[index], plan.node_slot_names[node]
        used.update(names)
        print(f"formula {node}: {text}", file=out)
        print(f"  expression : {_named(structure.expr, names)}", file=out)
        print(f"  derivative : {_named(structure.derivative, names)}", file=out)
        print(f"  structure  : {index} (key {structure.key})", file=out)
        print(f"  slotted    : {structure.expr}", file=out)
        for slot, (name, value) in enumerate(zip(names, plan.node_values[node])):
            origin = "given" if name in constants else "default of the named formula"
            print(f"  slot p{slot}    : {name} = {value!r} ({origin})", file=out)
        if not names:
            print("  slots      : none", file=out)
        print("", file=out)
    unused = sorted(set(constants) - used)
    if unused:
        print(f"note: constant(s) {', '.join(unused)} not used by any formula", file=sys.stderr)
    # Only the constants each formula uses, so rendering the source warns about nothing.
    return [(text, {n: constants[n] for n in names if n in constants})
            for text, names in zip(formulas, plan.node_slot_names)]


def main(argv: Optional[Sequence[str]] = None, out: TextIO = sys.stdout) -> int:
    """Exit status: 0 shown, 1 target not available, 2 bad formula or arguments."""
    args = _parser().parse_args(argv)
    try:
        configs = describe(args.formulas, dict(args.const), args.mode, out)
    except FormulaParsingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"---- generated {args.target} source ({args.mode}, {args.dtype}) ----", file=out)
    try:
        source = render_source(configs, args.target, args.mode, args.dtype)
    except (BackendUnavailableError, ImportError) as exc:
        print(f"the {args.target} target is not available: {exc}", file=sys.stderr)
        return 1
    print(source, file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
