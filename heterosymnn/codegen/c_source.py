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
loss, backward         ``out[i] = dL/dy_pred(a[i], b[i])``
=====================  =================================================

Pointers a function does not read may be NULL. ``p`` holds the row's slot
values as doubles (``p[i]`` is slot ``p<i>``); they are converted once, before
the loop, so the loop body is pure arithmetic the compiler vectorises.

Build flags (GCC/Clang; found with GCC 12, checked by the tests)
---------------------------------------------------------------
``GCC_FLAGS`` plus an ``-march`` the host supports (``x86-64-v3`` gives AVX2)
and ``-fopenmp`` or ``-fopenmp-simd -DHS_OPENMP_SIMD``:

* ``-fno-math-errno``: otherwise every math call may write ``errno`` and no
  loop that calls one is vectorised;
* ``-fno-trapping-math``: otherwise GCC will not if-convert a Piecewise whose
  branches compute (``x > 0 ? 1/x : 0``: "control flow in loop"). It only
  drops the ordering of floating-point exception flags, which nothing reads;
  results, NaN and inf included, are unchanged;
* ``-ffp-contract=off``: also forced by a pragma in the source;
* never ``-ffast-math`` or ``-ffinite-math-only``: they fold ``x != x``.

Where glibc's libmvec exists (x86-64 Linux, GCC) add ``LIBMVEC_COMPILE_FLAGS``
and link ``LIBMVEC_LIBRARIES`` so vectorised loops call ``_ZGVdN8v_sinf`` & co.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Sequence, Tuple

import sympy as sp

from heterosymnn.codegen import c_prelude
from heterosymnn.codegen.c_printer import CPrinter
from heterosymnn.codegen.common import DTYPES, UnsupportedExpressionError, check_dtype
from heterosymnn.codegen.dtypes import CODEGEN_VERSION
from heterosymnn.codegen.lowering import INPUT_NAMES, INPUT_POINTERS, bind_structure, element_body, sin_cos_pairs
from heterosymnn.symbolic.structure import ACTIVATION, Structure

#: Bump when the generated C changes meaning or form (feeds the cache key).

#: Optimisation flags the generated C is written for (see the module doc).
GCC_FLAGS = ("-O3", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off")
#: Where libmvec exists: turn on the SIMD declarations ...
LIBMVEC_COMPILE_FLAGS = (f"-D{c_prelude.LIBMVEC_MACRO}",)
#: ... and link the vector library (before libm).
LIBMVEC_LIBRARIES = ("mvec", "m")

ROW_PARAMS = ("int64_t n, const {T} *HS_RESTRICT a, const {T} *HS_RESTRICT b,\n"
              "    const {T} *HS_RESTRICT g, {T} *HS_RESTRICT out, const double *HS_RESTRICT p")
CDEF_PARAMS = "int64_t n, const {T} *a, const {T} *b, const {T} *g, {T} *out, const double *p"


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
        cffi ``cdef`` declaring every row function.
    functions : dict of str to (str, str)
        Structure key -> (forward row function, backward row function).
    math_functions : frozenset of str
        libm functions the source calls.
    uses_vector_math : bool
        Whether some call has a libmvec variant, i.e. whether building with
        ``-DHS_USE_LIBMVEC ... -lmvec`` can make a difference.
    """

    dtype: str
    source: str
    cdef: str
    functions: Dict[str, Tuple[str, str]]
    math_functions: frozenset
    uses_vector_math: bool


def row_function_names(key: str, dtype: str) -> Tuple[str, str]:
    """(forward, backward) C names of a structure's row functions.

    96 bits of the SHA-256 key keep names unique within any realistic module
    while staying readable.
    """
    tag = DTYPES[check_dtype(dtype)][1]
    return f"hs_{key[:24]}_{tag}_fwd", f"hs_{key[:24]}_{tag}_bwd"


def render_c_module(structures: Sequence[Structure], dtype: str) -> CModule:
    """Generate the C source, cffi cdef and name table for ``structures``.

    Parameters
    ----------
    structures : sequence of Structure
        Structures to compile; duplicates (same key) are emitted once.
    dtype : {"float32", "float64"}
        Element type of the kernels.
    """
    check_dtype(dtype)
    ctype = DTYPES[dtype][0]
    unique: Dict[str, Structure] = {}
    for structure in structures:
        unique.setdefault(structure.key, structure)
    printer = CPrinter(dtype, {})
    bodies: List[str] = []
    functions: Dict[str, Tuple[str, str]] = {}
    cdefs: List[str] = []
    # Sorted by key: the same set of structures gives the same source (and so
    # the same cache key) whatever order the caller lists them in.
    for key, structure in sorted(unique.items()):
        if structure.mode not in INPUT_NAMES:
            raise ValueError(f"structure {key[:12]}: unknown mode {structure.mode!r}")
        fwd, bwd = row_function_names(key, dtype)
        functions[key] = (fwd, bwd)
        grad = structure.mode == ACTIVATION
        try:
            bodies.append(_row_function(printer, structure, fwd, structure.expr, grad=False))
            bodies.append(_row_function(printer, structure, bwd, structure.derivative,
                                        grad=grad))
        except UnsupportedExpressionError as exc:
            raise UnsupportedExpressionError(
                f"structure {key[:12]} ({structure.expr}): {exc}") from exc
        cdefs += [f"void {name}({CDEF_PARAMS.format(T=ctype)});" for name in (fwd, bwd)]
    vector_decls = c_prelude.render_vector_declarations(
        printer.math_used, ctype, printer.math_name(""), printer.math_aliases)
    source = "\n".join(filter(None, [
        f"/* heterosymnn generated kernels: {dtype}, codegen v{CODEGEN_VERSION} */",
        c_prelude.COMMON_PRELUDE,
        vector_decls,
        printer.helper_definitions(),
        "\n".join(bodies),
    ]))
    return CModule(dtype=dtype, source=source, cdef="\n".join(cdefs) + "\n",
                   functions=functions,
                   math_functions=frozenset(printer.math_used | set(printer.math_aliases.values())),
                   uses_vector_math=bool(vector_decls))


def render_c(structures: Sequence[Structure], dtype: str = "float32") -> str:
    """Full, compilable C source of ``structures`` (what ``render_source`` shows)."""
    return render_c_module(structures, dtype).source


def _row_function(printer: CPrinter, structure: Structure, name: str,
                  expr: sp.Expr, *, grad: bool) -> str:
    ctype = printer.ctype
    lowered, used, inputs, slots = bind_structure(printer, structure, expr)
    # GCC fuses sin(u) and cos(u) into one sincos() call, which it cannot
    # vectorise; calling them through non-builtin aliases keeps them apart.
    # Only then: a non-builtin call under a Piecewise condition is not
    # if-converted, whereas the builtin is.
    printer.aliased_math = frozenset({"sin", "cos"}) if sin_cos_pairs(lowered) else frozenset()

    read = {INPUT_POINTERS[inputs[v]] for v in used if v in inputs}
    if grad:
        read.add("g")
    lines = [f"void {name}({ROW_PARAMS.format(T=ctype)})", "{"]
    used_slots = [s for s in structure.slots if s in used]
    lines += [f"    const {ctype} {slots[s]} = ({ctype})p[{s.name[1:]}];" for s in used_slots]
    unread = [ptr for ptr in ("a", "b", "g") if ptr not in read]
    if not used_slots:
        unread.append("p")
    if unread:
        lines.append("    " + " ".join(f"(void){ptr};" for ptr in unread))
    lines += ["    HS_SIMD_LOOP", "    for (int64_t i = 0; i < n; ++i) {"]
    lines += element_body(printer, lowered, used, inputs, ctype, grad)
    lines += ["    }", "}"]
    return "\n".join(lines) + "\n"
