"""C text of the layer driver's constants-gradient entry, and what the features-last one shares.

Appended by :func:`heterosymnn.codegen.c_runtime.render_runtime` to the
nodes-first driver, whose macros, typedefs and ``hs_team_*`` it uses::

    int hs_run_cgrad_f32(fns, cg_fns, rows, cols, a, b, g, out, params, p_stride,
                         offsets, cgrad, nthreads);

``cg_fns[r]`` is row ``r``'s constants-gradient function, NULL for a row without
constants (``fns[r]`` runs it and nothing is written for it).
``offsets[r] .. offsets[r+1]-1`` are row ``r``'s entries of ``cgrad``, which is
overwritten. It returns 0, -1 when scratch memory could not be allocated, or
``HS_OVERLAP`` (nothing written) when ``out`` overlaps an input without being it.
The features-last entry (:mod:`heterosymnn.codegen.c_features_last`) shares the
call record ``hs_job_*``, the pieces and the reduction.

Determinism: every row is cut into spans of ``HS_SPAN`` elements from its start.
Whoever runs a span (any thread, either layout) writes its partial sums to that
span's own scratch slot; the sums are then added span by span, in span order.
Chunks and tiles are whole numbers of spans, so the bits depend on nothing else.
"""
from __future__ import annotations

from heterosymnn.codegen import c_calls

CDEF = """\
typedef void (*hs_cg_fn_{tag})(int64_t, const {T} *, const {T} *, const {T} *, {T} *,
                             const double *, double *);
int hs_run_cgrad_{tag}(const hs_row_fn_{tag} *fns, const hs_cg_fn_{tag} *cg_fns, int64_t rows,
                     int64_t cols, const {T} *a, const {T} *b, const {T} *g, {T} *out,
                     const double *params, int64_t p_stride, const int64_t *offsets,
                     double *cgrad, int nthreads);
"""

TEMPLATE = """\
#include <stdlib.h>

typedef void (*hs_cg_fn_{tag})(int64_t, const {T} *, const {T} *, const {T} *, {T} *,
                             const double *, double *);

/* Fixed by the row functions' source (their span buffers): not a tuning knob. */
#define HS_SPAN_{TAG} {span}
#define HS_TILE_{TAG} {tile}
#define HS_NODE_BLOCK_{TAG} {node_block}


/* What every piece of one call shares. */
typedef struct {{
    const hs_row_fn_{tag} *fns;
    const hs_cg_fn_{tag} *cg_fns; /* NULL: no constants' gradient */
    int64_t rows, cols;         /* features last: nodes, samples */
    const {T} *a, *b, *g;
    {T} *out;
    const double *params;
    int64_t p_stride;
    const int64_t *offsets;
    double *scratch;            /* per row: n_spans x (its constants) partial sums */
    int64_t n_spans;
}} hs_job_{tag};

/* Fills *job for rows x cols (features last: nodes x samples), with scratch for one
   partial sum per constant and span when there is a gradient: -1 when malloc fails. */
static int hs_start_{tag}(hs_job_{tag} *job, const hs_row_fn_{tag} *fns, const hs_cg_fn_{tag} *cg_fns,
                        int64_t rows, int64_t cols, const {T} *a, const {T} *b, const {T} *g,
                        {T} *out, const double *params, int64_t p_stride, const int64_t *offsets)
{{
    int64_t count;
    job->fns = fns; job->cg_fns = cg_fns; job->rows = rows; job->cols = cols;
    job->a = a; job->b = b; job->g = g; job->out = out;
    job->params = params; job->p_stride = p_stride; job->offsets = offsets;
    job->n_spans = (cols + HS_SPAN_{TAG} - 1) / HS_SPAN_{TAG};
    job->scratch = NULL;
    if (!cg_fns)
        return 0;
    count = offsets[rows] * job->n_spans;
    job->scratch = (double *)malloc((size_t)(count > 0 ? count : 1) * sizeof(double));
    return job->scratch ? 0 : -1;
}}

/* cgrad[offsets[r] + k] = row r's span sums of constant k, added in span order. */
static void hs_reduce_{tag}(const hs_job_{tag} *job, double *cgrad, int threads)
{{
    int64_t r;
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
#else
    (void)threads;
#endif
    for (r = 0; r < job->rows; ++r) {{
        const int64_t count = job->offsets[r + 1] - job->offsets[r];
        const double *base = job->scratch + job->offsets[r] * job->n_spans;
        int64_t k, s;
        for (k = 0; k < count; ++k) {{
            double sum = base[k];
            for (s = 1; s < job->n_spans; ++s)
                sum += base[s * count + k];
            cgrad[job->offsets[r] + k] = sum;
        }}
    }}
}}

/* Row `row` on `len` elements from column `start`, read from a/b/g and written to out;
   with a constants-gradient function, the partial sums of its spans go to their slots. */
static void hs_piece_{tag}(const hs_job_{tag} *job, int64_t row, int64_t start, int64_t len,
                         const {T} *a, const {T} *b, const {T} *g, {T} *out)
{{
    const double *p = job->params ? job->params + row * job->p_stride : NULL;
    if (job->cg_fns && job->cg_fns[row]) {{
        const int64_t count = job->offsets[row + 1] - job->offsets[row];
        job->cg_fns[row](len, a, b, g, out, p, job->scratch + job->offsets[row] * job->n_spans
                                                + (start / HS_SPAN_{TAG}) * count);
    }} else {{
        job->fns[row](len, a, b, g, out, p);
    }}
}}

/* Nodes first: task t is chunk t % chunks of row t / chunks (the serial path: whole rows). */
static void hs_row_task_{tag}(const hs_job_{tag} *job, int64_t row, int64_t start, int64_t len)
{{
    const int64_t at = row * job->cols + start;
    hs_piece_{tag}(job, row, start, len, job->a + at, job->b ? job->b + at : NULL,
                 job->g ? job->g + at : NULL, job->out + at);
}}

int hs_run_cgrad_{tag}(const hs_row_fn_{tag} *fns, const hs_cg_fn_{tag} *cg_fns, int64_t rows,
                     int64_t cols, const {T} *a, const {T} *b, const {T} *g, {T} *out,
                     const double *params, int64_t p_stride, const int64_t *offsets,
                     double *cgrad, int nthreads)
{{
    hs_job_{tag} job;
    int64_t r;
    int threads;
    if (rows <= 0)
        return 0;
    if (cols <= 0) {{
        for (r = 0; r < offsets[rows]; ++r)
            cgrad[r] = 0.0;
        return 0;
    }}
    if (hs_overlap_{tag}(a, b, g, out, rows * cols))
        return HS_OVERLAP;
    if (hs_start_{tag}(&job, fns, cg_fns, rows, cols, a, b, g, out, params, p_stride, offsets))
        return -1;
    threads = hs_threads_{tag}(rows, cols, nthreads);
    if (threads <= 1) {{
        for (r = 0; r < rows; ++r)
            hs_row_task_{tag}(&job, r, 0, cols);
    }}
#ifdef _OPENMP
    else {{
        const int64_t chunk = HS_CHUNK_ELEMENTS_{TAG};
        const int64_t chunks = (cols + chunk - 1) / chunk;
        const int64_t tasks = rows * chunks;
        int64_t t;
#pragma omp parallel for num_threads(threads) schedule(guided)
        for (t = 0; t < tasks; ++t) {{
            const int64_t row = t / chunks;
            const int64_t start = (t - row * chunks) * chunk;
            hs_row_task_{tag}(&job, row, start, cols - start < chunk ? cols - start : chunk);
        }}
    }}
#endif
    hs_reduce_{tag}(&job, cgrad, hs_team_{tag}(offsets[rows] * job.n_spans, rows, threads));
    free(job.scratch);
    return 0;
}}
"""


#: The nodes-first call entry (``hs_call_*``, :mod:`heterosymnn.codegen.c_calls`) comes along.
CDEF += c_calls.CDEF


def render(fields: dict) -> str:
    """The C of this entry and of ``hs_call_*``; ``fields`` are the runtime template's."""
    return TEMPLATE.format(**fields) + "\n" + c_calls.render(fields)
