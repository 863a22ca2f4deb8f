"""Render one fused CUDA source for a set of structures (one per compiler).

Every structure becomes ``__device__`` *span functions* that evaluate a run of
elements ``i`` of flat arrays (which ones: see below), with the same uniform
semantics as the C row functions (:mod:`~heterosymnn.codegen.c_source`):

=====================  =================================================
activation, forward    ``out[i] = f(a[i])``
activation, backward   ``out[i] = g[i] * f'(a[i])``
loss, forward          ``out[i] = L(a[i], b[i])``   (a = y_pred, b = y_true)
loss, backward         ``out[i] = dL/dy_pred(a[i], b[i])``, times ``g[i]`` when ``g`` is not NULL
=====================  =================================================

Four ``extern "C" __global__`` kernels per source (``dir`` is ``forward`` or
``backward``, ``tag`` ``f32`` or ``f64``) for nodes-first arrays, all with one
signature::

    hs_{dir}_{rows|elems}_{tag}(const int *ids, const double *params,
        long long p_stride, long long rows, long long cols,
        const T *a, const T *b, const T *g, T *out)

Arrays are C-contiguous ``(rows, cols)``; node ``r`` uses structure case
``ids[r]`` (see :attr:`CudaModule.cases`) and its slot values
``params[r*p_stride ...]``. Pointers a structure does not read may be NULL.
Four more, for the features-last layout and the constants' gradient, give a
warp to up to 32 nodes of one structure (see :mod:`~heterosymnn.codegen.cuda_tiles`).

A span function evaluates samples ``s = start, start + step, ... < end`` of one
node at elements ``base + s*stride``: the rows kernels pass ``(0, 1)`` (flat
indices), the tile kernels the node's offset and the layout's stride. A
structure with constants also gets a *constants-gradient* span (one more
argument, ``double *acc``: each slot's running sum); its backward span is
printed from the same lowering, keeping only what the input derivative needs,
so both compute ``out`` with the same operations, bit for bit.

Thread mapping (:func:`plan_launch` picks one per shape)
---------------------------------------------------------
* ``rows`` kernel, for rows of at least a warp: ``blockIdx.y`` is the node
  (striding by ``gridDim.y`` beyond the 65535 limit) and the threads of the
  block stride over that row's columns. The ``switch`` on the structure is
  taken once per block row, so a warp never mixes structures, and the inner
  loop is the structure's own tight loop: ``(4, 1_000_000)`` runs at memory
  speed.
* ``elems`` kernel, for short rows (batch 1 ... 31): one thread per element
  over the flat array, so ``(1024, 1)`` is a handful of full blocks instead of
  1024 blocks with one busy thread each. A warp then spans up to 32 nodes that
  may use different structures and the ``switch`` diverges -- acceptable only
  because such launches are tiny and latency-bound; anything with a batch of a
  warp or more takes the ``rows`` kernel.

Compile with :data:`NVRTC_OPTIONS`: ``--fmad=false`` keeps ``a*b + c`` rounded
twice like NumPy (and like the C kernels, whose contraction is off too).
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

from heterosymnn.codegen.c_rows import GRAD, NO_GRAD, render_backward, row_function_names
from heterosymnn.codegen.common import DTYPES, PrintedUsage, UnsupportedExpressionError, check_dtype
from heterosymnn.codegen.cuda_launch import (  # noqa: F401  (re-exported: SymPy-free home)
    BLOCK_THREADS, BLOCKS_PER_SM, CUDA_OPTIONS, ROW_KERNEL_MIN_COLS, Launch, plan_launch)
from heterosymnn.codegen.cuda_printer import CUDA_CONSTANTS, CudaPrinter
from heterosymnn.codegen.cuda_tiles import TileCase, render_tile_kernels
from heterosymnn.codegen.dtypes import CODEGEN_VERSION
from heterosymnn.codegen.lowering import INPUT_NAMES, Body, bind_structure, element_body
from heterosymnn.symbolic.structure import Structure

#: Options every generated CUDA source is compiled with (the compiler adds the architecture).
NVRTC_OPTIONS: Tuple[str, ...] = CUDA_OPTIONS
_KERNEL_PARAMS = ("const int *ids, const double *params, long long p_stride, long long rows,\n"
                  "    long long cols, const {T} *a, const {T} *b, const {T} *g, {T} *out")
_SPAN_PARAMS = ("long long s, long long end, long long step, long long base, long long stride,\n"
                "    const {T} *a, const {T} *b, const {T} *g, {T} *out, const double *p")
#: The tile kernels' roles, after the four rows/elems ones.
TILE_ROLES = ("forward_tiles", "backward_tiles", "backward_grad", "constants_sum")


@dataclasses.dataclass(frozen=True)
class CudaModule:
    """Generated CUDA for a set of structures in one dtype.

    Attributes
    ----------
    dtype : str
        ``"float32"`` or ``"float64"``.
    source : str
        Complete CUDA C++ translation unit (compiles with NVRTC, no headers).
    cases : dict of str to int
        Structure key -> the ``switch`` case the kernels dispatch it on.
    kernels : dict of str to str
        ``"forward_rows"``, ``"forward_elems"``, ``"backward_rows"``,
        ``"backward_elems"`` and :data:`TILE_ROLES` -> the kernel's ``extern "C"`` name.
    options : tuple of str
        NVRTC options the source is written for.
    constants_grad_problems : dict of str to str
        Structure key -> why a structure with constants has no constants'
        gradient (the layer runs; asking for that gradient is an error).
    """

    dtype: str
    source: str
    cases: Dict[str, int]
    kernels: Dict[str, str]
    options: Tuple[str, ...] = NVRTC_OPTIONS
    constants_grad_problems: Dict[str, str] = dataclasses.field(default_factory=dict)


def kernel_names(dtype: str) -> Dict[str, str]:
    """Kernel role -> ``extern "C"`` name for ``dtype``."""
    tag = DTYPES[check_dtype(dtype)][1]
    names = {f"{d}_{k}": f"hs_{d}_{k}_{tag}" for d in ("forward", "backward") for k in ("rows", "elems")}
    names.update((role, f"hs_{role}_{tag}") for role in TILE_ROLES)
    return names


def render_cuda_module(structures: Sequence[Structure], dtype: str) -> CudaModule:
    """Generate the fused CUDA source of ``structures`` (duplicates emitted once).

    Cases are numbered in key order, so the same set of structures always
    gives the same source whatever order the caller lists them in. The
    constants' derivatives of every structure with constants are derived here.
    """
    check_dtype(dtype)
    unique: Dict[str, Structure] = {}
    for structure in structures:
        unique.setdefault(structure.key, structure)
    if not unique:
        raise ValueError("no structures to generate CUDA for")
    usage = PrintedUsage()
    spans: List[str] = []
    cases: Dict[str, int] = {}
    tile_cases: List[TileCase] = []
    problems: Dict[str, str] = {}
    for case, (key, structure) in enumerate(sorted(unique.items())):
        if structure.mode not in INPUT_NAMES:
            raise ValueError(f"structure {key[:12]}: unknown mode {structure.mode!r}")
        cases[key] = case
        try:
            text, tile_case, problem = _structure_spans(structure, case, dtype, usage)
        except UnsupportedExpressionError as exc:
            raise UnsupportedExpressionError(f"structure {key[:12]} ({structure.expr}): {exc}") from exc
        spans.append(text)
        tile_cases.append(tile_case)
        if problem is not None:
            problems[key] = problem
    names = kernel_names(dtype)
    printer = CudaPrinter(dtype, {}, usage=usage)  # the helpers every span needs
    kernels = [_kernel(names[f"{d}_{k}"], k, [(c.case, getattr(c, d)) for c in tile_cases], printer.ctype)
               for d in ("forward", "backward") for k in ("rows", "elems")]
    source = "\n".join(filter(None, [
        f"/* heterosymnn generated CUDA kernels: {dtype}, codegen v{CODEGEN_VERSION} */",
        CUDA_CONSTANTS,
        printer.helper_definitions(),
        "\n".join(spans),
        "\n".join(kernels),
        render_tile_kernels(names, tile_cases, printer.ctype),
    ]))
    return CudaModule(dtype=dtype, source=source, cases=cases, kernels=names, constants_grad_problems=problems)


def render_cuda(structures: Sequence[Structure], dtype: str = "float32") -> str:
    """Full CUDA source of ``structures`` (what ``render_source(target="cuda")`` shows)."""
    return render_cuda_module(structures, dtype).source


def _structure_spans(structure: Structure, case: int, dtype: str,
                     usage: PrintedUsage) -> Tuple[str, TileCase, Optional[str]]:
    """A structure's span functions, how the tile kernels call them, and why it has no
    constants-gradient span if it has constants but none could be made."""
    fwd, bwd = row_function_names(structure.key, dtype)
    forward = _span_function(structure, fwd, bind_structure(structure, structure.expr), dtype, usage)
    backward = render_backward(structure, dtype, usage, _span_function)
    tile_case = TileCase(case, fwd, bwd, backward.constants_grad, structure.n_slots)
    return "\n".join([forward, backward.source]), tile_case, backward.problem


def _span_function(structure: Structure, name: str, body: Body, dtype: str, usage: PrintedUsage,
                   *, grad: str = NO_GRAD, cgrad: bool = False) -> str:
    ctype = DTYPES[dtype][0]
    printer = CudaPrinter(dtype, body.symbol_names(), usage=usage)
    params = _SPAN_PARAMS.format(T=ctype) + (", double *acc" if cgrad else "")
    lines = [f"static __device__ __forceinline__ void {name}({params})", "{"]
    # Only used slots are read: an unused local is an NVRTC warning.
    lines += [f"    const {ctype} {body.slots[s]} = ({ctype})p[{s.name[1:]}];"
              for s in structure.slots if s in body.used]
    lines += ["    for (; s < end; s += step) {", "        const long long i = base + s * stride;"]
    if grad == NO_GRAD or (grad == GRAD and not cgrad):
        lines += element_body(printer, body, ctype, grad == GRAD)
    else:
        # element_body without its last line (the store): g[i] is read before out[i] is
        # written, which may be the same memory (backward_kernel(z, g, out=g)). A loss is
        # weighted by g only when one is given (uniform over the launch: no divergence);
        # 1*v is v to the bit, so an unweighted call gives what it always gave.
        load = "g[i]" if grad == GRAD else f"g ? g[i] : ({ctype})1"
        lines.append(f"        const {ctype} gi = {load};")
        lines += element_body(printer, body, ctype, grad=False)[:-1]
        lines += [f"        acc[{k}] += (double)(gi*({printer.expression(term)}));"
                  for k, term in enumerate(body.lowered.results[1:])]
        lines.append(f"        out[i] = gi*({printer.expression(body.lowered.results[0])});")
    lines += ["    }", "}"]
    return "\n".join(lines) + "\n"


def _kernel(name: str, kind: str, calls: Sequence[Tuple[int, str]], ctype: str) -> str:
    params = _KERNEL_PARAMS.format(T=ctype)
    if kind == "rows":
        head = [
            "    const long long step = (long long)gridDim.x * blockDim.x;",
            "    const long long col = (long long)blockIdx.x * blockDim.x + threadIdx.x;",
            "    for (long long row = blockIdx.y; row < rows; row += gridDim.y) {",
            "        const long long start = row * cols + col, end = row * cols + cols;",
        ]
        span = "start, end, step, 0, 1"
    else:
        head = [
            "    const long long step = (long long)gridDim.x * blockDim.x;",
            "    const long long total = rows * cols;",
            "    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {",
            "        const long long row = cols == 1 ? i : i / cols;",
        ]
        span = "i, i + 1, 1, 0, 1"
    lines = [f'extern "C" __global__ void {name}({params})', "{", *head,
             "        const double *p = params + row * p_stride;",
             "        switch (ids[row]) {"]
    lines += [f"        case {case}: {fn}({span}, a, b, g, out, p); break;" for case, fn in calls]
    lines += ["        default: break;", "        }", "    }", "}"]
    return "\n".join(lines) + "\n"
