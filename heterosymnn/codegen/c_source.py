"""Render the C kernels of a set of structures into one translation unit.

Every structure gets two *row functions* with one uniform signature, so the
runtime driver (:mod:`heterosymnn.codegen.c_runtime`) can call any of them
through a function pointer::

    void NAME(int64_t n, const T *restrict a, const T *restrict b,
              const T *restrict g, T *restrict out, const double *restrict p);

=====================  =================================================
activation, forward    ``out[i] = f(a[i])``
activation, backward   ``out[i] = g[i] * f'(a[i])``
loss, forward          ``out[i] = L(a[i], b[i])``   (a = y_pred, b = y_true)
loss, backward         ``out[i] = dL/dy_pred(a[i], b[i])``, times ``g[i]`` when ``g`` is not NULL
=====================  =================================================

Pointers a function does not read may be NULL. ``p`` holds the row's slot
values as doubles (``p[i]`` is slot ``p<i>``); they are converted once, before
the loop, so the loop body is pure arithmetic the compiler vectorises. The
flags it is written for are in :mod:`heterosymnn.toolchains.flags`. A structure
with constants also gets a third, the backward with its constants' gradient in
the same pass (see :mod:`heterosymnn.codegen.c_rows`, which renders them all);
``render_c_module``'s ``rows``/``constants_grad`` choose which of them a module holds.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Sequence, Tuple

from heterosymnn.codegen import c_blocks, c_prelude
from heterosymnn.codegen.c_exports import export_tables
from heterosymnn.codegen.c_printer import CPrinter
from heterosymnn.codegen.c_rows import render_rows, span_sum_helper
from heterosymnn.codegen.common import DTYPES, PrintedUsage, UnsupportedExpressionError, check_dtype
from heterosymnn.codegen.dtypes import CODEGEN_VERSION
from heterosymnn.codegen.lowering import INPUT_NAMES
from heterosymnn.symbolic.structure import Structure


@dataclasses.dataclass(frozen=True)
class CModule:
    """Generated C for a set of structures in one dtype.

    Attributes
    ----------
    dtype : str
        ``"float32"`` or ``"float64"``.
    source : str
        Complete C99 translation unit (prelude + row functions).
    cdef : str
        cffi ``cdef`` of the module: the two tables below, not the functions themselves (see
        :mod:`heterosymnn.codegen.c_exports`).
    function_cdef : str
        cffi declarations of the row functions themselves, for a harness that calls them
        by name from Python (a test); each costs the compiler a wrapper function.
    functions : dict of str to (str, str)
        Structure key -> (forward row function, backward row function).
    math_functions : frozenset of str
        libm functions the source calls.
    uses_vector_math : bool
        Whether some call has a libmvec variant, i.e. whether building with
        ``-DHS_USE_LIBMVEC ... -lmvec`` can make a difference.
    constants_grad : dict of str to str
        Structure key -> its constants-gradient row function (structures with constants).
    constants_grad_problems : dict of str to str
        Structure key -> why that structure, which has constants, has none.
    """

    dtype: str
    source: str
    cdef: str
    functions: Dict[str, Tuple[str, str]]
    math_functions: frozenset
    uses_vector_math: bool
    function_cdef: str = ""
    constants_grad: Dict[str, str] = dataclasses.field(default_factory=dict)
    constants_grad_problems: Dict[str, str] = dataclasses.field(default_factory=dict)


def render_c_module(structures: Sequence[Structure], dtype: str, *, rows: bool = True,
                    constants_grad: bool = True) -> CModule:
    """Generate the C source, cffi cdef and name table for ``structures``.

    Parameters
    ----------
    structures : sequence of Structure
        Structures to compile; duplicates (same key) are emitted once.
    dtype : {"float32", "float64"}
        Element type of the kernels.
    rows : bool
        Emit the forward and backward row functions (``functions`` names them either way).
    constants_grad : bool
        Emit the constants-gradient functions of structures with constants (deriving
        with respect to every constant). CPU_JIT's default build leaves them out and
        builds them lazily, in a module of their own (``rows=False``), on the first
        call that asks for the constants' gradient.
    """
    check_dtype(dtype)
    ctype = DTYPES[dtype][0]
    unique: Dict[str, Structure] = {}
    for structure in structures:
        unique.setdefault(structure.key, structure)
    usage = PrintedUsage()
    bodies: List[str] = []
    functions: Dict[str, Tuple[str, str]] = {}
    grads: Dict[str, str] = {}
    problems: Dict[str, str] = {}
    cdefs: List[str] = []
    exported: List[str] = []
    # Sorted by key: the same set of structures gives the same source (and so
    # the same cache key) whatever order the caller lists them in.
    for key, structure in sorted(unique.items()):
        if structure.mode not in INPUT_NAMES:
            raise ValueError(f"structure {key[:12]}: unknown mode {structure.mode!r}")
        try:
            row = render_rows(structure, dtype, usage, rows=rows, constants_grad=constants_grad)
        except UnsupportedExpressionError as exc:
            raise UnsupportedExpressionError(
                f"structure {key[:12]} ({structure.expr}): {exc}") from exc
        functions[key] = (row.forward, row.backward)
        if row.constants_grad:
            grads[key] = row.constants_grad
        if row.problem:
            problems[key] = row.problem
        if row.source:
            bodies.append(row.source)
            cdefs.append(row.cdef)
            exported += ([row.forward, row.backward] if rows else []) + \
                ([row.constants_grad] if row.constants_grad else [])
    tables_source, tables_cdef = export_tables(exported)
    printer = CPrinter(dtype, {}, usage=usage)  # the helpers every body needs
    vector_decls = c_prelude.render_vector_declarations(
        usage.math, ctype, printer.math_name(""), usage.aliases)
    source = "\n".join(filter(None, [
        f"/* heterosymnn generated kernels: {dtype}, codegen v{CODEGEN_VERSION} */",
        c_prelude.COMMON_PRELUDE,
        c_blocks.BLOCK_MACROS,
        vector_decls,
        printer.helper_definitions(),
        span_sum_helper(dtype) if grads else "",
        "\n".join(bodies),
        tables_source,
    ]))
    return CModule(dtype=dtype, source=source, cdef=tables_cdef, function_cdef="".join(cdefs),
                   functions=functions, constants_grad=grads, constants_grad_problems=problems,
                   math_functions=frozenset(usage.math | set(usage.aliases.values())),
                   uses_vector_math=bool(vector_decls))


def render_c(structures: Sequence[Structure], dtype: str = "float32") -> str:
    """Full, compilable C source of ``structures`` (what ``render_source`` shows)."""
    return render_c_module(structures, dtype).source
