"""Source of the generic layer driver that runs row functions over a layer.

One small module per dtype, independent of any formula, so it is compiled
once and cached like any other artifact. It receives one row-function pointer
per row (any row function of :mod:`heterosymnn.codegen.c_source`, from any
module) and runs the rows, and chunks of long rows, in parallel with OpenMP::

    int hs_run_f32(const hs_row_fn_f32 *fns, int64_t rows, int64_t cols,
                    const float *a, const float *b, const float *g, float *out,
                   const double *params, int64_t p_stride, int nthreads);

It returns 0, or ``HS_OVERLAP`` (-2, :data:`OVERLAP`) without touching anything when
``out`` overlaps an input without being it (``out`` equal to an input is fine: rows are
element-wise); every entry does. Arrays are C-contiguous ``(rows, cols)``; ``b``/``g`` may be NULL (and
``params`` too when no row has slots); row ``r`` reads its slot values at
``params + r*p_stride``; ``nthreads`` 0 means the
OpenMP default. Small inputs never enter an OpenMP region (entering one costs
about a microsecond, more than a small layer takes serially). The entries for
the constants' gradient and the features-last layout (``hs_run_cgrad_*``,
``hs_run_fl_*``) are in :mod:`heterosymnn.codegen.c_driver` and
:mod:`heterosymnn.codegen.c_features_last`.
"""
from __future__ import annotations

import dataclasses

from heterosymnn.codegen import c_driver, c_features_last, c_prelude
from heterosymnn.codegen.dtypes import DTYPES, check_dtype

#: Below this many elements (rows*cols) the driver runs serially. Measured
#: (float32, 2 threads, x86-64 AVX2): the serial/parallel break-even is ~16K
#: elements for relu (0.3 ns/element serial, ~1.5 us to start and join a
#: region) and ~8K for sin; at 32K relu gains 1.3x and sin 1.6x. Region cost
#: grows with the thread count, hence the higher of the two break-evens x2.
PARALLEL_MIN_ELEMENTS = 32768
#: Long rows are split into chunks of this many elements so a few long rows
#: still spread over all threads. Measured 2K..64K: no difference for many
#: rows; for 3 rows of 100K, <= 8K balances best (51 us vs 55 us at 16K+).
CHUNK_ELEMENTS = 8192
#: The constants' gradient is summed per span of this many elements of a row, then
#: span by span (see c_driver): chunks and tiles must be whole numbers of spans. The
#: constants-gradient row functions are generated for it (their span buffers).
SPAN_ELEMENTS = 128
#: Features last: samples per tile (a whole number of spans and of any vector width)...
TILE_SAMPLES = 128
#: ... and bytes of a tile's row in the caller's array: several cache lines of nodes.
NODE_BLOCK_BYTES = 256
_ITEMSIZE = {"float32": 4, "float64": 8}
#: What every entry of the driver returns when ``out`` partly overlaps an input.
OVERLAP = -2

_TEMPLATE = """\
/* heterosymnn layer driver: {dtype} */
#include <stddef.h>
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#ifndef HS_PARALLEL_MIN_ELEMENTS_{TAG}
#define HS_PARALLEL_MIN_ELEMENTS_{TAG} {parallel_min}
#endif
#ifndef HS_CHUNK_ELEMENTS_{TAG}
#define HS_CHUNK_ELEMENTS_{TAG} {chunk}
#endif

typedef void (*hs_row_fn_{tag})(int64_t, const {T} *, const {T} *, const {T} *, {T} *,
                              const double *);

/* What an entry returns when `out` partly overlaps an input (see hs_overlap_{tag}). */
#ifndef HS_OVERLAP
#define HS_OVERLAP (-2)
#endif

/* Threads for `tasks` tasks over `total` elements: 1 means the serial path. */
static int hs_team_{tag}(int64_t total, int64_t tasks, int nthreads)
{{
#ifdef _OPENMP
    int threads;
    if (total < HS_PARALLEL_MIN_ELEMENTS_{TAG} || nthreads == 1 || tasks < 2 || omp_in_parallel())
        return 1;
    threads = nthreads > 0 ? nthreads : omp_get_max_threads();
    return tasks < (int64_t)threads ? (int)tasks : threads;
#else
    (void)total; (void)tasks; (void)nthreads;
    return 1;
#endif
}}

/* Threads hs_run_{tag} will use for this shape: 1 means the serial path. */
int hs_threads_{tag}(int64_t rows, int64_t cols, int nthreads)
{{
    const int64_t chunks = (cols + HS_CHUNK_ELEMENTS_{TAG} - 1) / HS_CHUNK_ELEMENTS_{TAG};
    return hs_team_{tag}(rows * cols, rows * chunks, nthreads);
}}

/* Whether `out` overlaps one of the inputs without being it (n elements each): element-wise
   rows may write in place, but a shifted overlap would read values already written. The
   caller then runs again on copies of the inputs (HS_OVERLAP). Compared as integers: the
   arrays are unrelated objects to C. */
int hs_overlap_{tag}(const {T} *a, const {T} *b, const {T} *g, const {T} *out, int64_t n)
{{
    const uintptr_t lo = (uintptr_t)out, hi = (uintptr_t)(out + n);
    const {T} *inputs[3];
    int k;
    inputs[0] = a; inputs[1] = b; inputs[2] = g;
    for (k = 0; k < 3; ++k) {{
        const uintptr_t at = (uintptr_t)inputs[k];
        if (inputs[k] && inputs[k] != out && at < hi && lo < (uintptr_t)(inputs[k] + n))
            return 1;
    }}
    return 0;
}}

/* Offsets are applied only to pointers that exist: NULL + k is undefined. */
static void hs_span_{tag}(hs_row_fn_{tag} fn, int64_t offset, int64_t len,
                        const {T} *a, const {T} *b, const {T} *g, {T} *out,
                        const double *params, int64_t p_offset)
{{
    fn(len, a ? a + offset : NULL, b ? b + offset : NULL, g ? g + offset : NULL,
       out + offset, params ? params + p_offset : NULL);
}}

int hs_run_{tag}(const hs_row_fn_{tag} *fns, int64_t rows, int64_t cols,
               const {T} *a, const {T} *b, const {T} *g, {T} *out,
               const double *params, int64_t p_stride, int nthreads)
{{
    int64_t r;
    int threads;
    if (rows <= 0 || cols <= 0)
        return 0;
    if (hs_overlap_{tag}(a, b, g, out, rows * cols))
        return HS_OVERLAP;
    threads = hs_threads_{tag}(rows, cols, nthreads);
    if (threads <= 1) {{
        for (r = 0; r < rows; ++r)
            hs_span_{tag}(fns[r], r * cols, cols, a, b, g, out, params, r * p_stride);
        return 0;
    }}
#ifdef _OPENMP
    {{
        const int64_t chunk = HS_CHUNK_ELEMENTS_{TAG};
        const int64_t chunks = (cols + chunk - 1) / chunk;
        const int64_t tasks = rows * chunks;
        int64_t t;
        /* guided: large contiguous runs first (as fast as static when the
           machine is quiet), then smaller ones, so a thread that another
           process holds up does not leave the others waiting at the join. */
#pragma omp parallel for num_threads(threads) schedule(guided)
        for (t = 0; t < tasks; ++t) {{
            const int64_t row = t / chunks;
            const int64_t start = (t - row * chunks) * chunk;
            const int64_t len = cols - start < chunk ? cols - start : chunk;
            hs_span_{tag}(fns[row], row * cols + start, len, a, b, g, out,
                        params, row * p_stride);
        }}
    }}
#endif
    return 0;
}}
"""

_CDEF = """\
typedef void (*hs_row_fn_{tag})(int64_t, const {T} *, const {T} *, const {T} *, {T} *,
                              const double *);
int hs_threads_{tag}(int64_t rows, int64_t cols, int nthreads);
int hs_overlap_{tag}(const {T} *a, const {T} *b, const {T} *g, const {T} *out, int64_t n);
int hs_run_{tag}(const hs_row_fn_{tag} *fns, int64_t rows, int64_t cols,
               const {T} *a, const {T} *b, const {T} *g, {T} *out,
               const double *params, int64_t p_stride, int nthreads);
"""


@dataclasses.dataclass(frozen=True)
class RuntimeSource:
    """The driver's C source and cffi cdef for one dtype.

    Attributes
    ----------
    dtype : str
    source, cdef : str
    run_name : str
        ``hs_run_f32`` / ``hs_run_f64``.
    threads_name : str
        ``hs_threads_*``: how many threads a call of that shape would use.
    row_fn_type : str
        The function-pointer typedef (cast row-function addresses to it).
    parallel_min_elements, chunk_elements : int
        The thresholds compiled in.
    cgrad_name, features_last_name : str
        ``hs_run_cgrad_*`` (nodes first, with constants' gradient) and ``hs_run_fl_*``
        (features last, with or without it).
    cgrad_fn_type : str
        The typedef of constants-gradient row functions.
    """

    dtype: str
    source: str
    cdef: str
    run_name: str
    threads_name: str
    row_fn_type: str
    parallel_min_elements: int
    chunk_elements: int
    cgrad_name: str
    features_last_name: str
    cgrad_fn_type: str


def render_runtime(dtype: str, *, parallel_min_elements: int = PARALLEL_MIN_ELEMENTS,
                   chunk_elements: int = CHUNK_ELEMENTS) -> RuntimeSource:
    """Render the layer driver for ``dtype``.

    Parameters
    ----------
    dtype : {"float32", "float64"}
    parallel_min_elements : int
        Smallest ``rows*cols`` that may run in parallel.
    chunk_elements : int
        Most elements of one row handed to one task: a multiple of ``SPAN_ELEMENTS``
        (a span must never be split between tasks).
    """
    ctype, tag = DTYPES[check_dtype(dtype)]
    if parallel_min_elements < 0 or chunk_elements < 1 or chunk_elements % SPAN_ELEMENTS:
        raise ValueError(f"parallel_min_elements must be >= 0 and chunk_elements a positive "
                         f"multiple of {SPAN_ELEMENTS}")
    fields = dict(dtype=dtype, T=ctype, tag=tag, TAG=tag.upper(),
                  parallel_min=int(parallel_min_elements), chunk=int(chunk_elements),
                  span=SPAN_ELEMENTS, tile=TILE_SAMPLES, node_block=NODE_BLOCK_BYTES // _ITEMSIZE[dtype])
    return RuntimeSource(
        dtype=dtype, source="\n".join([_TEMPLATE.format(**fields), c_prelude.COMMON_PRELUDE,
                                        c_driver.render(fields), c_features_last.render(dtype, fields)]),
        cdef=_CDEF.format(**fields) + c_driver.CDEF.format(**fields) + c_features_last.CDEF.format(**fields),
        run_name=f"hs_run_{tag}", threads_name=f"hs_threads_{tag}",
        row_fn_type=f"hs_row_fn_{tag}", parallel_min_elements=int(parallel_min_elements),
        chunk_elements=int(chunk_elements), cgrad_name=f"hs_run_cgrad_{tag}",
        features_last_name=f"hs_run_fl_{tag}", cgrad_fn_type=f"hs_cg_fn_{tag}")
