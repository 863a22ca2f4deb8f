"""C text of the driver's nodes-first call entry: one layer record, and rows that share a function
run as one call when the batch is a single sample.

Appended by :func:`heterosymnn.codegen.c_driver.render` after the nodes-first driver
(``hs_run_*``, ``hs_threads_*``, ``hs_overlap_*``)::

    int hs_call_f32(const hs_layer_f32 *layer, int64_t cols,
                    const void *a, const void *b, const void *g, void *out);

``hs_layer_*`` holds what does not change from call to call (function table, row
count, constants, threads), so a call passes six arguments instead of ten: on a
32-node layer every argument cffi converts shows. The arrays are ``void *`` (the
layer's dtype) so that Python hands over plain buffers, with no pointer type to check. It returns what ``hs_run_*``
returns (0, or ``HS_OVERLAP`` with nothing written).

With one column (a batch of one sample, serial) a row costs a function call and a whole
padded vector block for its single element. Rows with the same function and the same
constants (bit for bit) are then gathered into one contiguous buffer, padded to whole
blocks and run as one call, and the results scattered back: ``order`` lists the rows
sorted by function, so such rows are neighbours in it. Bit-identical to one call per row,
because every element's result depends only on its own value, function and constants, not
on where it sits in a row (batch invariance, tested). Measured (float32, AVX2, backward of
the 8 formulas interleaved, C time): 32x1 0.7x and 1024x1 0.25x the time of one call per
row. The same gather for 2 to 16 columns (copies of whole rows) was tried: it saved nothing
measurable and lost up to 1.2x at 16 columns, where a row is whole blocks already, so wider
batches run one call per row.
"""
from __future__ import annotations

CDEF = """\
typedef struct {{
    const hs_row_fn_{tag} *fns;
    const int64_t *order;
    int64_t rows;
    const double *params;
    int64_t p_stride;
    int nthreads;
}} hs_layer_{tag};
int hs_call_{tag}(const hs_layer_{tag} *layer, int64_t cols, const void *a, const void *b,
                const void *g, void *out);
"""

TEMPLATE = """\
#include <string.h>

/* What a layer's nodes-first calls share (see heterosymnn.codegen.c_calls). */
typedef struct {{
    const hs_row_fn_{tag} *fns;
    const int64_t *order;   /* rows sorted by function; NULL when no two rows share one */
    int64_t rows;
    const double *params;
    int64_t p_stride;
    int nthreads;
}} hs_layer_{tag};

/* A gathered call holds at most this many elements (4 buffers of them on the stack). */
#define HS_GATHER_{TAG} 256
/* A gathered call is padded to whole blocks of the row functions (codegen.c_blocks: the same
   flags build both), so it runs their block loop only. A wrong guess costs time, not bits. */
#if defined(__AVX512F__)
#  define HS_CALL_BLOCK_{TAG} 16
#else
#  define HS_CALL_BLOCK_{TAG} 8
#endif

/* Whether rows r and s read the same constants, bit for bit (0.0 and -0.0 differ). Compared
   as integers: a memcmp call per pair would cost more than the row it saves. */
static int hs_same_constants_{tag}(const hs_layer_{tag} *layer, int64_t r, int64_t s)
{{
    const double *x, *y;
    int64_t k;
    if (!layer->params)
        return 1;
    x = layer->params + r * layer->p_stride;
    y = layer->params + s * layer->p_stride;
    for (k = 0; k < layer->p_stride; ++k) {{
        uint64_t u, v;
        memcpy(&u, x + k, sizeof u);
        memcpy(&v, y + k, sizeof v);
        if (u != v)
            return 0;
    }}
    return 1;
}}

/* buf[k] = from[rows[k]] for k < n, then the last value again up to a whole number of
   blocks (as a row function pads); returns that padded length. */
static int64_t hs_collect_{tag}(const int64_t *rows, int64_t n, const {T} *from, {T} *buf)
{{
    const int64_t padded = (n + HS_CALL_BLOCK_{TAG} - 1) / HS_CALL_BLOCK_{TAG} * HS_CALL_BLOCK_{TAG};
    int64_t k;
    for (k = 0; k < n; ++k)
        buf[k] = from[rows[k]];
    for (; k < padded; ++k)
        buf[k] = buf[n - 1];
    return padded;
}}

/* One column: rows sharing a function and constants run as one gathered call. */
static void hs_grouped_{tag}(const hs_layer_{tag} *layer, const {T} *a, const {T} *b, const {T} *g, {T} *out)
{{
    {T} ga[HS_GATHER_{TAG}], gb[HS_GATHER_{TAG}], gg[HS_GATHER_{TAG}], go[HS_GATHER_{TAG}];
    const int64_t most = HS_GATHER_{TAG} - HS_CALL_BLOCK_{TAG};
    const int64_t *order = layer->order;
    int64_t i = 0, k, len;
    while (i < layer->rows) {{
        const int64_t first = order[i];
        const hs_row_fn_{tag} fn = layer->fns[first];
        const double *p = layer->params ? layer->params + first * layer->p_stride : NULL;
        int64_t n = 1;
        while (i + n < layer->rows && n < most && layer->fns[order[i + n]] == fn
               && hs_same_constants_{tag}(layer, first, order[i + n]))
            ++n;
        len = hs_collect_{tag}(order + i, n, a, ga);
        if (b)
            hs_collect_{tag}(order + i, n, b, gb);
        if (g)
            hs_collect_{tag}(order + i, n, g, gg);
        fn(len, ga, b ? gb : NULL, g ? gg : NULL, go, p);
        for (k = 0; k < n; ++k)
            out[order[i + k]] = go[k];
        i += n;
    }}
}}

int hs_call_{tag}(const hs_layer_{tag} *layer, int64_t cols, const void *va, const void *vb,
                const void *vg, void *vout)
{{
    const {T} *a = (const {T} *)va, *b = (const {T} *)vb, *g = (const {T} *)vg;
    {T} *out = ({T} *)vout;
    if (cols == 1 && layer->order && layer->rows > 0 && hs_threads_{tag}(layer->rows, 1, layer->nthreads) <= 1) {{
        if (hs_overlap_{tag}(a, b, g, out, layer->rows))
            return HS_OVERLAP;
        hs_grouped_{tag}(layer, a, b, g, out);
        return 0;
    }}
    return hs_run_{tag}(layer->fns, layer->rows, cols, a, b, g, out, layer->params, layer->p_stride,
                      layer->nthreads);
}}
"""


def render(fields: dict) -> str:
    """The C of this entry; ``fields`` are the runtime template's."""
    return TEMPLATE.format(**fields)
