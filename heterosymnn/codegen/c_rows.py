"""The C row functions of one structure: forward, backward, and backward with constants' gradient.

Forward and backward share one signature (:data:`ROW_PARAMS`, see
:mod:`heterosymnn.codegen.c_source`). A structure with constants also gets a
*constants-gradient* row function, one more argument at the end::

    void NAME(int64_t n, const T *a, const T *b, const T *g, T *out,
              const double *p, double *cg);

It writes ``out[i]`` exactly as the backward does, and for every span of
:data:`~heterosymnn.codegen.c_runtime.SPAN_ELEMENTS` elements counted from ``a[0]``
(the last one may be shorter) one partial sum per slot ``k``::

    cg[span*n_slots + k] = sum over the span of (double)(g[i] * df/dp_k)   (activation)
                           sum over the span of (double)(g[i] * dL/dp_k)  (loss, g given)
                           sum over the span of (double)dL/dp_k           (loss, g NULL)

A loss's backward functions weigh by ``g`` when it is given (``out[i] = g[i] * dL/dy_pred``,
the upstream gradient of ``backward_kernel(..., grad=w)``) and not when it is NULL: one
branch per call (per span), each side the same loop as the activation's or the plain one.

Each term is computed in the layer's dtype, in the same loop as ``out``, into a
span buffer; :func:`span_sum_helper` then adds the buffer up in an order this
text fixes (8 double lanes, then a fixed tree), never the vectoriser or the
pointers' alignment, so a span's sum is the same bits wherever the span sits.

The constants-gradient function is rendered on its own (CPU_JIT builds it lazily,
on the first call asking for the constants' gradient, so the default build never
derives with respect to the constants), from one lowering: the backward's, unchanged
(the same temporaries and operations for ``out[i]``, so the same bits), extended by
the constant derivatives (:func:`extend_lowering`: temporaries ``u<i>``, and every
temporary of the backward they contain read from it, not computed again).
(:func:`render_backward`, used by CUDA, prints both from one joint lowering: there
the backward is always built with the constant derivatives.)

What the single lowering changes in the object code: with GCC 12 -O3, nothing for most
formulas (GCC had merged the two lowerings' repeated math calls and arithmetic: the
calls are builtins or ``const`` aliases), one division less per element for swish (its
``e/(1 + e)`` written two ways). Other compilers get the sharing from the source. What
a constants-gradient call costs beyond the backward is the terms' own work, about a
forward's (``d/da`` of ``a*sin(w*x)`` is ``sin(w*x)``), and the float64 span sums (about
12 ns per 128 terms: one float->double conversion each, at that instruction's throughput).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, List, Optional, Sequence, Tuple

import sympy as sp

from heterosymnn.codegen.c_blocks import block_loop, pad_buffers
from heterosymnn.codegen.c_printer import CPrinter
from heterosymnn.codegen.c_runtime import SPAN_ELEMENTS
from heterosymnn.codegen.common import DTYPES, PrintedUsage, UnsupportedExpressionError, check_dtype
from heterosymnn.codegen.lowering import (
    INPUT_POINTERS, Body, Lowered, bind_structure, element_body, exp_of_minus_abs, lower, sin_cos_pairs,
)
from heterosymnn.errors import FormulaParsingError
from heterosymnn.symbolic.structure import ACTIVATION, Structure

ROW_PARAMS = ("int64_t n, const {T} *HS_RESTRICT a, const {T} *HS_RESTRICT b,\n"
              "    const {T} *HS_RESTRICT g, {T} *HS_RESTRICT out, const double *HS_RESTRICT p")
CDEF_PARAMS = "int64_t n, const {T} *a, const {T} *b, const {T} *g, {T} *out, const double *p"
#: No restrict on the arrays: ``out`` may be ``a``, ``b`` or ``g`` (in place), and with the
#: terms computed after ``out[i]`` a compiler told they never alias may read ``a[i]`` again
#: after writing ``out[i]`` (GCC did). ``omp simd`` vectorises the loop all the same.
CGRAD_PARAMS = ("int64_t n, const {T} *a, const {T} *b,\n"
                "    const {T} *g, {T} *out, const double *HS_RESTRICT p, double *HS_RESTRICT cg")
CGRAD_CDEF_PARAMS = CDEF_PARAMS + ", double *cg"
#: How a backward function weighs each element by ``g`` (the incoming gradient): never (a
#: forward), always (an activation's backward) or when ``g`` is not NULL (a loss's backward:
#: ``backward_kernel(..., grad=w)``; without it ``g`` is NULL and nothing is weighted).
NO_GRAD, GRAD, OPTIONAL_GRAD = "none", "always", "optional"
#: Lanes of the span sum: 8 doubles are two AVX2 vectors, one AVX-512 vector.
SUM_LANES = 8
_SIN_COS = frozenset({"sin", "cos"})


@dataclasses.dataclass(frozen=True)
class StructureRows:
    """The C row functions of one structure.

    Attributes
    ----------
    forward, backward : str
        Names of the forward and backward row functions.
    constants_grad : str or None
        Name of the constants-gradient row function; None without constants,
        or when ``problem`` says why it could not be made.
    problem : str or None
        Why a structure with constants has no constants-gradient function.
    source, cdef : str
        The definitions, and their cffi declarations.
    """

    forward: str
    backward: str
    constants_grad: Optional[str]
    problem: Optional[str]
    source: str
    cdef: str


def backward_grad(structure: Structure) -> str:
    """How the backward functions of ``structure`` use ``g``: :data:`GRAD` or :data:`OPTIONAL_GRAD`."""
    return GRAD if structure.mode == ACTIVATION else OPTIONAL_GRAD


def row_function_names(key: str, dtype: str) -> Tuple[str, str]:
    """(forward, backward) C names of a structure's row functions.

    96 bits of the SHA-256 key keep names unique within any realistic module
    while staying readable.
    """
    tag = DTYPES[check_dtype(dtype)][1]
    return f"hs_{key[:24]}_{tag}_fwd", f"hs_{key[:24]}_{tag}_bwd"


def constants_grad_function_name(key: str, dtype: str) -> str:
    """C name of a structure's constants-gradient row function."""
    return f"hs_{key[:24]}_{DTYPES[check_dtype(dtype)][1]}_cgrad"


def render_rows(structure: Structure, dtype: str, usage: PrintedUsage, *, rows: bool = True,
                constants_grad: bool = True) -> StructureRows:
    """The row functions of ``structure``.

    ``rows``: the forward and backward. ``constants_grad``: with slots, the
    constants-gradient function (its constant derivatives are derived only then; a
    failure is reported as ``problem``). The names are returned either way.
    """
    ctype = DTYPES[check_dtype(dtype)][0]
    fwd, bwd = row_function_names(structure.key, dtype)
    sources: List[str] = []
    cdef: List[str] = []
    if rows:
        sources.append(_row_function(structure, fwd, bind_structure(structure, structure.expr), dtype, usage,
                                     grad=NO_GRAD))
        sources.append(_row_function(structure, bwd, bind_structure(structure, structure.derivative), dtype,
                                     usage, grad=backward_grad(structure)))
        cdef += [f"void {name}({CDEF_PARAMS.format(T=ctype)});" for name in (fwd, bwd)]
    name, problem = None, None
    if constants_grad and structure.n_slots:
        name, source, problem = render_constants_grad(structure, dtype, usage)
        if name:
            sources.append(source)
            cdef.append(f"void {name}({CGRAD_CDEF_PARAMS.format(T=ctype)});")
    return StructureRows(fwd, bwd, name, problem, "\n".join(sources), "".join(c + "\n" for c in cdef))


def render_constants_grad(structure: Structure, dtype: str,
                          usage: PrintedUsage) -> Tuple[Optional[str], str, Optional[str]]:
    """(name, source, problem) of the constants-gradient function of a structure with slots.

    One lowering, extended: ``out`` comes from the backward's own lowering, unchanged (bit
    for bit the backward's, which is built without the constant derivatives), and the terms
    are lowered on top of it (:func:`extend_lowering`), reusing every temporary of the
    backward they contain (``exp(-|k*x|)``, ``1/(1 + e)``, a condition ...), so each is
    computed once per element. A constant derivative that cannot be made or printed gives
    ``(None, "", why)``.
    """
    grad = backward_grad(structure)
    try:
        backward = bind_structure(structure, structure.derivative)
        lowered = extend_lowering(backward.lowered, structure.constant_derivatives, prefix="u")
        used = lowered.free_symbols()
        unknown = used - set(backward.inputs) - set(backward.slots)
        if unknown:
            raise ValueError(f"structure {structure.key[:12]}: unexpected symbols {sorted(map(str, unknown))}")
        body = Body(lowered, frozenset(used), backward.inputs, backward.slots)
        name = constants_grad_function_name(structure.key, dtype)
        # Printed into a scratch usage first: a failure must not leave its helpers behind.
        scratch = PrintedUsage()
        source = _row_function(structure, name, body, dtype, scratch, grad=grad, cgrad=True)
    except (FormulaParsingError, UnsupportedExpressionError) as exc:
        # The layer still runs; only asking for its constants' gradient is an error.
        return None, "", str(exc)
    usage.math |= scratch.math
    usage.aliases.update(scratch.aliases)
    usage.helpers |= scratch.helpers
    return name, source, None


def extend_lowering(base: Lowered, exprs: Sequence[sp.Basic], prefix: str) -> Lowered:
    """``base`` with ``exprs`` lowered after it, as more results that reuse its temporaries.

    ``base``'s temporaries and results stay exactly as they are (so whatever it computes
    keeps its bits); every subexpression of ``exprs`` equal to one of its temporaries
    (expanded) is read from that temporary, and the rest is common-subexpression-
    eliminated into temporaries named ``<prefix><i>``. A joint lowering of everything
    would share more, but it may regroup ``base``'s own products (``a*b*c`` as ``a*(b*c)``)
    and change its bits.
    """
    expanded: dict = {}
    known: dict = {}
    for temp, value in base.temps:
        full = value.xreplace(expanded)
        expanded[temp] = full
        known.setdefault(full, temp)
    # Written as lower() writes its inputs, so the forms match the temporaries'.
    reusing = [exp_of_minus_abs(expr).xreplace(known) for expr in exprs]
    more = lower(reusing, prefix=prefix)
    # A new temporary that the base already computes (``t1*t3``, found only among the new
    # expressions' products) is the base's.
    same = {value: temp for temp, value in base.temps}
    renamed: dict = {}
    temps = []
    for temp, value in more.temps:
        value = value.xreplace(renamed)
        if value in same:
            renamed[temp] = same[value]
        else:
            temps.append((temp, value))
    results = tuple(result.xreplace(renamed) for result in more.results)
    return Lowered(base.temps + tuple(temps), base.results + results)


@dataclasses.dataclass(frozen=True)
class Backward:
    """A structure's backward and constants-gradient functions, from one lowering."""

    source: str
    """Both definitions (the second only with ``constants_grad``)."""
    constants_grad: Optional[str]
    """Name of the constants-gradient function, if one was made."""
    problem: Optional[str]
    """Why a structure with constants has none."""


def render_backward(structure: Structure, dtype: str, usage: PrintedUsage,
                    render: Callable[..., str]) -> Backward:
    """The backward and, with constants, the constants-gradient function (any target).

    ``render(structure, name, body, dtype, usage, grad=..., cgrad=...)`` prints one
    function. Both are printed from the lowering of the input derivative together
    with the constant derivatives (the backward keeping only what it needs), so both
    compute ``out`` with the same operations. A constant derivative that cannot be
    made or printed leaves the backward alone and is reported as ``problem``.
    """
    bwd = row_function_names(structure.key, dtype)[1]
    grad = backward_grad(structure)
    name, cgrad, problem, joint = None, "", None, None
    if structure.n_slots:
        try:
            joint = bind_structure(structure, structure.derivative, *structure.constant_derivatives)
            name = constants_grad_function_name(structure.key, dtype)
            cgrad = render(structure, name, joint, dtype, usage, grad=grad, cgrad=True)
        except (FormulaParsingError, UnsupportedExpressionError) as exc:
            # The layer still runs; only asking for its constants' gradient is an error.
            name, joint, problem = None, None, str(exc)
    body = bind_structure(structure, structure.derivative) if joint is None else _first_result(joint)
    backward = render(structure, bwd, body, dtype, usage, grad=grad, cgrad=False)
    return Backward("\n".join(filter(None, [backward, cgrad])), name, problem)


def span_sum_helper(dtype: str) -> str:
    """C of ``hs_span_sum_<tag>(terms, n)``: the sum of ``n <= SPAN_ELEMENTS`` terms in double.

    Element ``i`` goes to lane ``i % SUM_LANES``; the lanes are added in a fixed
    tree. The order is this text's, so every compiler, vector width and alignment
    gives the same bits (GCC vectorises the lanes without reassociating anything).
    """
    ctype, tag = DTYPES[check_dtype(dtype)]
    lanes = SUM_LANES
    tree = [f"lane[{i}]" for i in range(lanes)]
    while len(tree) > 1:
        tree = [f"({tree[i]} + {tree[i + 1]})" for i in range(0, len(tree), 2)]
    return "\n".join([
        # Called, not inlined: one copy per module instead of one per constant of every
        # function halves the extra compile time; a call per 128 terms costs nothing.
        "#ifndef HS_NOINLINE",
        "#  if defined(_MSC_VER)",
        "#    define HS_NOINLINE __declspec(noinline)",
        "#  elif defined(__GNUC__) || defined(__clang__)",
        "#    define HS_NOINLINE __attribute__((noinline))",
        "#  else",
        "#    define HS_NOINLINE",
        "#  endif",
        "#endif",
        f"static HS_NOINLINE double hs_span_sum_{tag}(const {ctype} *HS_RESTRICT terms, int64_t n)",
        "{",
        f"    double lane[{lanes}] = {{{', '.join(['0.0'] * lanes)}}};",
        "    int64_t i = 0;",
        "    int l;",
        f"    for (; i + {lanes} <= n; i += {lanes})",
        f"        for (l = 0; l < {lanes}; ++l)",
        "            lane[l] += (double)terms[i + l];",
        "    for (l = 0; i + l < n; ++l)",
        "        lane[l] += (double)terms[i + l];",
        f"    return {tree[0][1:-1]};",
        "}",
    ]) + "\n"


def _first_result(body: Body) -> Body:
    """``body`` computing only its first result: the temporaries that one needs, in order."""
    lowered = body.lowered
    needed = set(lowered.results[0].free_symbols)
    kept: List[Tuple[sp.Symbol, sp.Basic]] = []
    for temp, value in reversed(lowered.temps):
        if temp in needed:
            kept.append((temp, value))
            needed |= value.free_symbols
    first = Lowered(tuple(reversed(kept)), lowered.results[:1])
    return Body(first, frozenset(first.free_symbols()), body.inputs, body.slots)


def _row_function(structure: Structure, name: str, body: Body, dtype: str, usage: PrintedUsage,
                  *, grad: str, cgrad: bool = False) -> str:
    ctype = DTYPES[dtype][0]
    # GCC fuses sin(u) and cos(u) into one sincos() call, which it cannot
    # vectorise; calling them through non-builtin aliases keeps them apart.
    # Only then: a non-builtin call under a Piecewise condition is not
    # if-converted, whereas the builtin is.
    aliased = _SIN_COS if sin_cos_pairs(body.lowered) else frozenset()
    printer = CPrinter(dtype, body.symbol_names(), aliased_math=aliased, usage=usage)

    inputs = {INPUT_POINTERS[body.inputs[v]] for v in body.used if v in body.inputs}
    read = inputs | ({"g"} if grad != NO_GRAD else set())
    params = CGRAD_PARAMS if cgrad else ROW_PARAMS
    lines = [f"void {name}({params.format(T=ctype)})", "{"]
    used_slots = [s for s in structure.slots if s in body.used]
    lines += [f"    const {ctype} {body.slots[s]} = ({ctype})p[{s.name[1:]}];" for s in used_slots]
    unread = [ptr for ptr in ("a", "b", "g") if ptr not in read]
    if not used_slots:
        unread.append("p")
    if unread:
        lines.append("    " + " ".join(f"(void){ptr};" for ptr in unread))
    tag = DTYPES[dtype][1]
    lines += pad_buffers(ctype, tag, sorted(read))

    def loop(weighted: bool, indent: int) -> List[str]:
        """The element loop, multiplying by ``g[i]`` or not."""
        pointers = sorted(read if weighted else inputs)
        if cgrad:
            return _span_block(printer, body, ctype, tag, weighted, pointers, indent)
        # Blocks, the tail padded: every element takes the same vector path (c_blocks).
        return block_loop(ctype, tag, pointers, element_body(printer, body, ctype, weighted),
                          first="0", limit="n", restrict=True, indent=indent)

    def body_lines(indent: int) -> List[str]:
        if grad != OPTIONAL_GRAD:
            return loop(grad == GRAD, indent)
        # A loss: weighted by g when the caller gives one (one branch per call or span, so
        # every element of a call still runs the same loop); unweighted, no g to read.
        pad = "    " * indent
        return [f"{pad}if (g) {{", *loop(True, indent + 1), f"{pad}}} else {{", *loop(False, indent + 1),
                f"{pad}}}"]

    if cgrad:
        lines += _span_loops(body, ctype, tag, body_lines)
    else:
        lines += body_lines(1)
    return "\n".join(lines + ["}"]) + "\n"


def _span_loops(body: Body, ctype: str, tag: str, block: Callable[[int], List[str]]) -> List[str]:
    """The constants-gradient loops: per span, ``out`` and every slot's terms (``block``), then
    their sums.

    A span is whole blocks (``SPAN_ELEMENTS`` is a multiple of every block width), so
    the terms of a padded tail block land inside the span buffer, past the span's end,
    where the sum never reads them.
    """
    n_terms = len(body.lowered.results) - 1
    span = SPAN_ELEMENTS
    lines = [f"    {ctype} dp{k}[{span}];" for k in range(n_terms)]
    lines += [f"    for (int64_t s = 0; s < n; s += {span}) {{",
              f"        const int64_t end = n - s < {span} ? n : s + {span};"]
    lines += block(2)
    lines += [f"        cg[{k}] = hs_span_sum_{tag}(dp{k}, end - s);" for k in range(n_terms)]
    lines += [f"        cg += {n_terms};", "    }"]
    return lines


def _span_block(printer: CPrinter, body: Body, ctype: str, tag: str, grad: bool, read: Sequence[str],
                indent: int) -> List[str]:
    """One span's element loop: ``out`` and each slot's term into the span buffers ``dp<k>``."""
    terms: Sequence[sp.Basic] = body.lowered.results[1:]
    *statements, store_out = element_body(printer, body, ctype, grad)
    for k, term in enumerate(terms):
        value = printer.expression(term)
        statements.append(f"dq{k}[i] = g[i]*({value});" if grad else f"dq{k}[i] = {value};")
    statements.append(store_out)  # last: every read of this element comes before

    def scope(offset: str) -> List[str]:
        return [f"{ctype} *HS_RESTRICT dq{k} = dp{k} + {offset};" for k in range(len(terms))]

    return block_loop(ctype, tag, read, statements, first="s", limit="end", restrict=False,
                      scope=scope, indent=indent)
