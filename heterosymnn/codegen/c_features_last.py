"""C text of the layer driver's features-last entry: PyTorch's ``(..., n_nodes)`` layout.

Appended by :func:`heterosymnn.codegen.c_runtime.render_runtime` after
:mod:`heterosymnn.codegen.c_driver`, whose call record and pieces it uses::

    int hs_run_fl_f32(fns, cg_fns, nodes, samples, a, b, g, out, params, p_stride,
                      offsets, cgrad, nthreads);

The arrays are C-contiguous ``(samples, nodes)``: node ``j`` owns ``a[i*nodes + j]``.
``cg_fns`` may be NULL (no constants' gradient: ``offsets`` and ``cgrad`` unused);
otherwise as in ``hs_run_cgrad_*``, with the same spans and so the same bits. A loss
may come with ``g`` (its weights) beside ``b``: the tile gathers all three then.

A task copies a tile of ``HS_TILE`` samples x ``HS_NODE_BLOCK`` nodes into
node-major stack buffers, runs each node's row function on its contiguous samples
and copies the results back: no transposed copy of the whole array, and the results
are bit-identical to nodes-first (a row function computes every element alike,
wherever it sits: :mod:`heterosymnn.codegen.c_blocks`).

Measured (float32, 1024 nodes x 1024 samples, 8 mixed formulas, one thread,
benchmarks/features_last.py): a tile row of one cache line (16 nodes) made the
copies cost as much as the formulas when the row length is 1024 (rows 4 KB apart
fight over the same cache sets); 256 bytes (64 nodes) and 128 samples per tile
cost least. The copies move blocks of HS_TR x HS_TR elements through registers
with AVX where the build targets it (about 4x faster than element by element),
in plain C elsewhere; the values are only moved, so the results are the same bits.
"""
from __future__ import annotations

#: A block of 8x8 floats or 4x4 doubles transposed in AVX registers, with the
#: plain C version for other targets. dst[c*ds + r] = src[r*ss + c].
BLOCK = {
    "float32": """\
#if defined(__AVX__)
#include <immintrin.h>
#define HS_TR_F32 8
static void hs_block_f32(const float *HS_RESTRICT src, int64_t ss, float *HS_RESTRICT dst, int64_t ds)
{
    const __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + ss);
    const __m256 r2 = _mm256_loadu_ps(src + 2 * ss), r3 = _mm256_loadu_ps(src + 3 * ss);
    const __m256 r4 = _mm256_loadu_ps(src + 4 * ss), r5 = _mm256_loadu_ps(src + 5 * ss);
    const __m256 r6 = _mm256_loadu_ps(src + 6 * ss), r7 = _mm256_loadu_ps(src + 7 * ss);
    const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    const __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    const __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    const __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    _mm256_storeu_ps(dst, _mm256_permute2f128_ps(s0, s4, 0x20));
    _mm256_storeu_ps(dst + ds, _mm256_permute2f128_ps(s1, s5, 0x20));
    _mm256_storeu_ps(dst + 2 * ds, _mm256_permute2f128_ps(s2, s6, 0x20));
    _mm256_storeu_ps(dst + 3 * ds, _mm256_permute2f128_ps(s3, s7, 0x20));
    _mm256_storeu_ps(dst + 4 * ds, _mm256_permute2f128_ps(s0, s4, 0x31));
    _mm256_storeu_ps(dst + 5 * ds, _mm256_permute2f128_ps(s1, s5, 0x31));
    _mm256_storeu_ps(dst + 6 * ds, _mm256_permute2f128_ps(s2, s6, 0x31));
    _mm256_storeu_ps(dst + 7 * ds, _mm256_permute2f128_ps(s3, s7, 0x31));
}
#else
#define HS_TR_F32 4
""",
    "float64": """\
#if defined(__AVX__)
#include <immintrin.h>
#define HS_TR_F64 4
static void hs_block_f64(const double *HS_RESTRICT src, int64_t ss, double *HS_RESTRICT dst, int64_t ds)
{
    const __m256d r0 = _mm256_loadu_pd(src), r1 = _mm256_loadu_pd(src + ss);
    const __m256d r2 = _mm256_loadu_pd(src + 2 * ss), r3 = _mm256_loadu_pd(src + 3 * ss);
    const __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);
    const __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
    _mm256_storeu_pd(dst, _mm256_permute2f128_pd(t0, t2, 0x20));
    _mm256_storeu_pd(dst + ds, _mm256_permute2f128_pd(t1, t3, 0x20));
    _mm256_storeu_pd(dst + 2 * ds, _mm256_permute2f128_pd(t0, t2, 0x31));
    _mm256_storeu_pd(dst + 3 * ds, _mm256_permute2f128_pd(t1, t3, 0x31));
}
#else
#define HS_TR_F64 4
""",
}
#: The plain C block (the #else branch of BLOCK).
PLAIN_BLOCK = """\
static void hs_block_{tag}(const {T} *HS_RESTRICT src, int64_t ss, {T} *HS_RESTRICT dst, int64_t ds)
{{
    int r, c;
    for (r = 0; r < HS_TR_{TAG}; ++r)
        for (c = 0; c < HS_TR_{TAG}; ++c)
            dst[c * ds + r] = src[r * ss + c];
}}
#endif
"""

CDEF = """\
int hs_run_fl_{tag}(const hs_row_fn_{tag} *fns, const hs_cg_fn_{tag} *cg_fns, int64_t nodes,
                  int64_t samples, const {T} *a, const {T} *b, const {T} *g, {T} *out,
                  const double *params, int64_t p_stride, const int64_t *offsets,
                  double *cgrad, int nthreads);
"""

TEMPLATE = """\
#if defined(__GNUC__) || defined(__clang__)
#  define HS_PREFETCH(p, write) __builtin_prefetch((p), (write), 3)
#elif defined(_MSC_VER) && (defined(_M_X64) || defined(_M_IX86))
#  include <xmmintrin.h>
#  define HS_PREFETCH(p, write) _mm_prefetch((const char *)(p), _MM_HINT_T0)
#else
#  define HS_PREFETCH(p, write) ((void)(p))
#endif

/* Tile <-> node-major buffer (row stride HS_TILE); `stride` is the caller's row length.
   Blocks of HS_TR x HS_TR go through hs_block_{tag} (in registers where the ISA allows);
   the edges of a clipped tile element by element. */
static void hs_gather_{tag}(const {T} *HS_RESTRICT src, int64_t stride, int64_t t, int64_t nb,
                          {T} *HS_RESTRICT dst)
{{
    const int64_t tf = t - t % HS_TR_{TAG}, nf = nb - nb % HS_TR_{TAG};
    int64_t i, j;
    for (i = 0; i < tf; i += HS_TR_{TAG})
        for (j = 0; j < nf; j += HS_TR_{TAG})
            hs_block_{tag}(src + i * stride + j, stride, dst + j * HS_TILE_{TAG} + i, HS_TILE_{TAG});
    for (i = 0; i < t; ++i)
        for (j = i < tf ? nf : 0; j < nb; ++j)
            dst[j * HS_TILE_{TAG} + i] = src[i * stride + j];
}}

/* The inverse of hs_gather_{tag}; with `scale` (the caller's layout, like dst), each value
   is multiplied by it on the way: see hs_tile_{tag}. */
static void hs_scatter_{tag}(const {T} *HS_RESTRICT src, int64_t stride, int64_t t, int64_t nb,
                           const {T} *scale, {T} *dst)
{{
    {T} stage[HS_TR_{TAG} * HS_NODE_BLOCK_{TAG}];
    const int64_t tf = t - t % HS_TR_{TAG}, nf = nb - nb % HS_TR_{TAG};
    int64_t i, j, r;
    for (i = 0; i < t; i += HS_TR_{TAG}) {{
        const int64_t rows = t - i < HS_TR_{TAG} ? t - i : HS_TR_{TAG};
        for (j = 0; i < tf && j < nf; j += HS_TR_{TAG})
            hs_block_{tag}(src + j * HS_TILE_{TAG} + i, HS_TILE_{TAG}, stage + j, HS_NODE_BLOCK_{TAG});
        for (r = 0; r < rows; ++r)
            for (j = i < tf ? nf : 0; j < nb; ++j)
                stage[r * HS_NODE_BLOCK_{TAG} + j] = src[j * HS_TILE_{TAG} + i + r];
        /* Each row's piece written at once: written a vector at a time between other
           rows (4 KB apart when n_nodes is 1024), its cache lines are fetched again. */
        for (r = 0; r < rows; ++r) {{
            {T} *row = dst + (i + r) * stride;
            const {T} *from = stage + r * HS_NODE_BLOCK_{TAG};
            if (scale) {{
                const {T} *factor = scale + (i + r) * stride;
                for (j = 0; j < nb; ++j)
                    row[j] = factor[j] * from[j];
            }} else {{
                for (j = 0; j < nb; ++j)
                    row[j] = from[j];
            }}
        }}
    }}
}}

/* Where task t of a features-last call starts, and how big it is. */
static void hs_tile_of_{tag}(const hs_job_{tag} *job, int64_t t, int64_t *s0, int64_t *j0,
                           int64_t *ns, int64_t *nb)
{{
    const int64_t blocks = (job->rows + HS_NODE_BLOCK_{TAG} - 1) / HS_NODE_BLOCK_{TAG};
    *s0 = t / blocks * HS_TILE_{TAG};
    *j0 = t % blocks * HS_NODE_BLOCK_{TAG};
    *ns = job->cols - *s0 < HS_TILE_{TAG} ? job->cols - *s0 : HS_TILE_{TAG};
    *nb = job->rows - *j0 < HS_NODE_BLOCK_{TAG} ? job->rows - *j0 : HS_NODE_BLOCK_{TAG};
}}

/* Features last, task t: samples [s0, s0 + HS_TILE) x nodes [j0, j0 + HS_NODE_BLOCK),
   clipped, through node-major stack buffers; each node's results replace its inputs
   there (row functions are element-wise). A backward without constants' gradient runs
   with a gradient of ones and multiplies by the real one on the way out: g*(1*d) is g*d
   to the bit (when both are NaN, either NaN), and one copy fewer. While the nodes run, the lines of task t + 1 (the
   next node block, the same rows: usually this thread's next task) are prefetched, as no
   hardware prefetcher follows rows 4 KB apart. */
static void hs_tile_{tag}(const hs_job_{tag} *job, int64_t t, int64_t tasks)
{{
    {T} ta[HS_TILE_{TAG} * HS_NODE_BLOCK_{TAG}], ts[HS_TILE_{TAG} * HS_NODE_BLOCK_{TAG}];
    {T} tg[HS_TILE_{TAG} * HS_NODE_BLOCK_{TAG}];
    {T} ones[HS_TILE_{TAG}];
    const int scaled = job->g && !job->cg_fns;
    const {T} *second = job->b ? job->b : (scaled ? NULL : job->g); /* gathered */
    /* A weighted loss's constants' gradient reads b and g: g gathered too. */
    const {T} *third = job->b && job->g && !scaled ? job->g : NULL;
    const {T} *gathered_g = third ? tg : (job->b ? NULL : ts);
    const {T} *pre[3];
    int64_t s0, j0, ns, nb, s1 = 0, j1 = 0, ns1 = 0, nb1 = 0, at, i, j, prefetched = 0;
    int n_pre = 0, k;
    hs_tile_of_{tag}(job, t, &s0, &j0, &ns, &nb);
    if (t + 1 < tasks)
        hs_tile_of_{tag}(job, t + 1, &s1, &j1, &ns1, &nb1);
    at = s0 * job->rows + j0;
    pre[n_pre++] = job->a;
    if (second)
        pre[n_pre++] = second;
    if (scaled || third)
        pre[n_pre++] = job->g;
    hs_gather_{tag}(job->a + at, job->rows, ns, nb, ta);
    if (second)
        hs_gather_{tag}(second + at, job->rows, ns, nb, ts);
    if (third)
        hs_gather_{tag}(third + at, job->rows, ns, nb, tg);
    for (i = 0; i < ns; ++i)
        ones[i] = 1;
    for (j = 0; j < nb; ++j) {{
        {T} *row = ta + j * HS_TILE_{TAG};
        const {T} *row_g = scaled ? ones : (job->g ? gathered_g + j * HS_TILE_{TAG} : NULL);
        const int64_t until = (j + 1) * ns1 / nb;
        for (; prefetched < until; ++prefetched) {{
            const int64_t line = (s1 + prefetched) * job->rows + j1;
            for (i = 0; i < nb1; i += 64 / (int64_t)sizeof({T})) {{
                for (k = 0; k < n_pre; ++k)
                    HS_PREFETCH(pre[k] + line + i, 0);
                HS_PREFETCH(job->out + line + i, 1);
            }}
        }}
        hs_piece_{tag}(job, j0 + j, s0, ns, row, job->b ? ts + j * HS_TILE_{TAG} : NULL, row_g, row);
    }}
    hs_scatter_{tag}(ta, job->rows, ns, nb, scaled ? job->g + at : NULL, job->out + at);
}}

int hs_run_fl_{tag}(const hs_row_fn_{tag} *fns, const hs_cg_fn_{tag} *cg_fns, int64_t nodes,
                  int64_t samples, const {T} *a, const {T} *b, const {T} *g, {T} *out,
                  const double *params, int64_t p_stride, const int64_t *offsets,
                  double *cgrad, int nthreads)
{{
    const int64_t blocks = (nodes + HS_NODE_BLOCK_{TAG} - 1) / HS_NODE_BLOCK_{TAG};
    const int64_t tasks = (samples + HS_TILE_{TAG} - 1) / HS_TILE_{TAG} * blocks;
    hs_job_{tag} job;
    int64_t t;
    int threads;
    if (nodes <= 0 || samples <= 0) {{
        for (t = 0; cg_fns && nodes > 0 && t < offsets[nodes]; ++t)
            cgrad[t] = 0.0;
        return 0;
    }}
    if (hs_overlap_{tag}(a, b, g, out, nodes * samples))
        return HS_OVERLAP;
    if (hs_start_{tag}(&job, fns, cg_fns, nodes, samples, a, b, g, out, params, p_stride, offsets))
        return -1;
    threads = hs_team_{tag}(nodes * samples, tasks, nthreads);
    /* Consecutive tasks are neighbouring node blocks of one tile: a thread's run of
       tasks reads whole cache lines of the same rows. */
    if (threads <= 1) {{
        for (t = 0; t < tasks; ++t)
            hs_tile_{tag}(&job, t, tasks);
    }}
#ifdef _OPENMP
    else {{
#pragma omp parallel for num_threads(threads) schedule(guided)
        for (t = 0; t < tasks; ++t)
            hs_tile_{tag}(&job, t, tasks);
    }}
#endif
    if (cg_fns) {{
        hs_reduce_{tag}(&job, cgrad, hs_team_{tag}(offsets[nodes] * job.n_spans, nodes, threads));
        free(job.scratch);
    }}
    return 0;
}}
"""


def render(dtype: str, fields: dict) -> str:
    """The C of this entry for ``dtype``; ``fields`` are the runtime template's."""
    return BLOCK[dtype] + PLAIN_BLOCK.format(**fields) + "\n" + TEMPLATE.format(**fields)
