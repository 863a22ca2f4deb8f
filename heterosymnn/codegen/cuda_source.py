"""Render one fused CUDA source for a set of structures (one per compiler).

Every structure becomes a ``__device__`` *span function* that evaluates the
elements ``i = start, start + step, ... < end`` of flat arrays, with the same
uniform semantics as the C row functions (:mod:`~heterosymnn.codegen.c_source`):

=====================  =================================================
activation, forward    ``out[i] = f(a[i])``
activation, backward   ``out[i] = g[i] * f'(a[i])``
loss, forward          ``out[i] = L(a[i], b[i])``   (a = y_pred, b = y_true)
loss, backward         ``out[i] = dL/dy_pred(a[i], b[i])``
=====================  =================================================

Four ``extern "C" __global__`` kernels per source (``dir`` is ``forward`` or
``backward``, ``tag`` ``f32`` or ``f64``), all with one signature::

    hs_{dir}_{rows|elems}_{tag}(const int *ids, const double *params,
        long long p_stride, long long rows, long long cols,
        const T *a, const T *b, const T *g, T *out)

Arrays are C-contiguous ``(rows, cols)``; node ``r`` uses structure case
``ids[r]`` (see :attr:`CudaModule.cases`) and its slot values
``params[r*p_stride ...]``. Pointers a structure does not read may be NULL.

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
from typing import Dict, List, Sequence, Tuple

import sympy as sp

from heterosymnn.codegen.common import DTYPES, UnsupportedExpressionError, check_dtype
from heterosymnn.codegen.c_source import row_function_names
from heterosymnn.codegen.cuda_printer import CUDA_CONSTANTS, CudaPrinter
from heterosymnn.codegen.dtypes import CODEGEN_VERSION
from heterosymnn.codegen.lowering import INPUT_NAMES, bind_structure, element_body
from heterosymnn.symbolic.structure import ACTIVATION, Structure

#: Options every generated CUDA source is compiled with (CuPy adds the -arch).
NVRTC_OPTIONS: Tuple[str, ...] = ("--fmad=false",)
#: Threads per block of both kernels.
BLOCK_THREADS = 256
#: Rows shorter than this take the one-thread-per-element kernel.
ROW_KERNEL_MIN_COLS = 32
#: Resident blocks aimed for per multiprocessor; more only adds scheduling.
BLOCKS_PER_SM = 32
_MAX_GRID_Y = 65535
_MAX_GRID_X = 2**31 - 1

_KERNEL_PARAMS = ("const int *ids, const double *params, long long p_stride, long long rows,\n"
                  "    long long cols, const {T} *a, const {T} *b, const {T} *g, {T} *out")
_SPAN_PARAMS = ("long long i, long long end, long long step,\n"
                "    const {T} *a, const {T} *b, const {T} *g, {T} *out, const double *p")


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
        ``"backward_elems"`` -> the kernel's ``extern "C"`` name.
    options : tuple of str
        NVRTC options the source is written for.
    """

    dtype: str
    source: str
    cases: Dict[str, int]
    kernels: Dict[str, str]
    options: Tuple[str, ...] = NVRTC_OPTIONS


@dataclasses.dataclass(frozen=True)
class Launch:
    """Which kernel runs a ``(rows, cols)`` shape, and its grid."""

    kind: str  # "rows" or "elems"
    grid: Tuple[int, int, int]
    block: Tuple[int, int, int]


def kernel_names(dtype: str) -> Dict[str, str]:
    """Kernel role -> ``extern "C"`` name for ``dtype``."""
    tag = DTYPES[check_dtype(dtype)][1]
    return {f"{d}_{k}": f"hs_{d}_{k}_{tag}" for d in ("forward", "backward") for k in ("rows", "elems")}


def plan_launch(rows: int, cols: int, sm_count: int) -> Launch:
    """Kernel and grid for a C-contiguous ``(rows, cols)`` launch.

    Enough blocks to fill ``sm_count`` multiprocessors, never more blocks
    than there are elements; grid-stride loops in the kernels cover the rest.
    """
    target = max(1, sm_count) * BLOCKS_PER_SM
    block = (BLOCK_THREADS, 1, 1)
    if cols >= ROW_KERNEL_MIN_COLS:
        grid_y = min(rows, _MAX_GRID_Y)
        per_row = -(-cols // BLOCK_THREADS)
        grid_x = max(1, min(per_row, -(-target // grid_y)))
        return Launch("rows", (grid_x, grid_y, 1), block)
    blocks = -(-(rows * cols) // BLOCK_THREADS)
    return Launch("elems", (max(1, min(blocks, target, _MAX_GRID_X)), 1, 1), block)


def render_cuda_module(structures: Sequence[Structure], dtype: str) -> CudaModule:
    """Generate the fused CUDA source of ``structures`` (duplicates emitted once).

    Cases are numbered in key order, so the same set of structures always
    gives the same source whatever order the caller lists them in.
    """
    check_dtype(dtype)
    unique: Dict[str, Structure] = {}
    for structure in structures:
        unique.setdefault(structure.key, structure)
    if not unique:
        raise ValueError("no structures to generate CUDA for")
    printer = CudaPrinter(dtype, {})
    spans: List[str] = []
    cases: Dict[str, int] = {}
    calls: Dict[str, List[Tuple[int, str]]] = {"forward": [], "backward": []}
    for case, (key, structure) in enumerate(sorted(unique.items())):
        if structure.mode not in INPUT_NAMES:
            raise ValueError(f"structure {key[:12]}: unknown mode {structure.mode!r}")
        fwd, bwd = row_function_names(key, dtype)
        cases[key] = case
        try:
            spans.append(_span_function(printer, structure, fwd, structure.expr, grad=False))
            spans.append(_span_function(printer, structure, bwd, structure.derivative,
                                        grad=structure.mode == ACTIVATION))
        except UnsupportedExpressionError as exc:
            raise UnsupportedExpressionError(f"structure {key[:12]} ({structure.expr}): {exc}") from exc
        calls["forward"].append((case, fwd))
        calls["backward"].append((case, bwd))
    names = kernel_names(dtype)
    kernels = [_kernel(names[f"{d}_{k}"], k, calls[d], printer.ctype)
               for d in ("forward", "backward") for k in ("rows", "elems")]
    source = "\n".join(filter(None, [
        f"/* heterosymnn generated CUDA kernels: {dtype}, codegen v{CODEGEN_VERSION} */",
        CUDA_CONSTANTS,
        printer.helper_definitions(),
        "\n".join(spans),
        "\n".join(kernels),
    ]))
    return CudaModule(dtype=dtype, source=source, cases=cases, kernels=names)


def render_cuda(structures: Sequence[Structure], dtype: str = "float32") -> str:
    """Full CUDA source of ``structures`` (what ``render_source(target="cuda")`` shows)."""
    return render_cuda_module(structures, dtype).source


def _span_function(printer: CudaPrinter, structure: Structure, name: str,
                   expr: sp.Expr, *, grad: bool) -> str:
    ctype = printer.ctype
    lowered, used, inputs, slots = bind_structure(printer, structure, expr)
    lines = [f"static __device__ __forceinline__ void {name}({_SPAN_PARAMS.format(T=ctype)})", "{"]
    # Only used slots are read: an unused local is an NVRTC warning.
    lines += [f"    const {ctype} {slots[s]} = ({ctype})p[{s.name[1:]}];"
              for s in structure.slots if s in used]
    lines.append("    for (; i < end; i += step) {")
    lines += element_body(printer, lowered, used, inputs, ctype, grad)
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
        span = "start, end, step"
    else:
        head = [
            "    const long long step = (long long)gridDim.x * blockDim.x;",
            "    const long long total = rows * cols;",
            "    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {",
            "        const long long row = cols == 1 ? i : i / cols;",
        ]
        span = "i, i + 1, 1"
    lines = [f'extern "C" __global__ void {name}({params})', "{", *head,
             "        const double *p = params + row * p_stride;",
             "        switch (ids[row]) {"]
    lines += [f"        case {case}: {fn}({span}, a, b, g, out, p); break;" for case, fn in calls]
    lines += ["        default: break;", "        }", "    }", "}"]
    return "\n".join(lines) + "\n"
