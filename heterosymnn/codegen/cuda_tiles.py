"""CUDA warp-tile kernels: PyTorch's features-last layout and the constants' gradient.

Three kernels share one signature (``tag`` is ``f32`` or ``f64``)::

    hs_{forward|backward}_tiles_{tag}, hs_backward_grad_{tag}(
        const int *groups, long long n_groups, const int *perm, const double *params,
        long long p_stride, long long node_stride, long long sample_stride, long long samples,
        long long n_chunks, const T *a, const T *b, const T *g, T *out,
        const long long *offsets, double *partial)

Node ``j``'s sample ``s`` is element ``j*node_stride + s*sample_stride``: ``(cols, 1)``
for nodes first, ``(1, n_nodes)`` for features last. ``offsets``/``partial`` are only
read by ``backward_grad`` (NULL otherwise).

Work unit: one warp per *tile* = one *group* x one chunk of samples
--------------------------------------------------------------------------
A group (:func:`tile_table`, rows of ``groups``: case, first position in ``perm``,
node count, lane width) holds up to 32 nodes of ONE structure, so the ``switch``
on the structure is taken once per warp and a warp never diverges on it. With
width ``w`` (a power of two >= the count) lane ``l`` runs node ``l % w`` on samples
``l / w, + 32/w, ...`` of the chunk: in the features-last layout the lanes of one
step read consecutive nodes of one sample, which are adjacent in memory when a
structure's nodes are (a layer built from blocks of formulas, or one formula):
coalesced loads without a transpose. A structure used by few, scattered nodes
costs idle lanes and scattered loads instead -- the price of never diverging;
mixing structures in a warp would serialise every branch of the ``switch``.
Nodes-first rows of at least a warp use one node per group (``w = 1``: the lanes
read consecutive columns); shorter rows use the packed groups too.

Every lane does at most :data:`TILE_STEPS` steps per tile, so a chunk is
``TILE_STEPS * 32/w`` samples; groups of other widths have fewer chunks and the
warps of their missing tiles skip them.

The constants' gradient, deterministically
-------------------------------------------
``backward_grad`` computes ``out`` with the same operations as ``backward`` (the
backward span is printed from the same lowering) and, per lane, each slot's sum
of ``g * df/dp_k`` (loss: ``dL/dp_k``, times ``g`` when given) terms in double, term by term in sample
order. The lanes of one node are combined by a fixed shuffle tree
(``hs_tile_sums``) and lane ``member`` stores one partial per (constant, chunk)
in ``partial[constant*n_chunks + chunk]``. ``hs_constants_sum_{tag}`` then gives
each node a warp that adds its chunks' partials in a fixed lane-strided order
and a fixed shuffle tree into ``constants_grad`` (every entry overwritten). No
atomics: the order of every addition is fixed by the layer's plan, the shape and
the layout -- never by the grid, the device or timing. Grids come from
:func:`plan_tiles` and only change how many tiles each warp takes in turn.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

WARP = 32
#: Steps each lane takes per tile: a tile is ``TILE_STEPS*32`` elements; one partial
#: sum per node and tile, so larger tiles mean fewer partials but fewer warps.
TILE_STEPS = 32

TILE_PARAMS = ("const int *groups, long long n_groups, const int *perm, const double *params,\n"
               "    long long p_stride, long long node_stride, long long sample_stride, long long samples,\n"
               "    long long n_chunks, const {T} *a, const {T} *b, const {T} *g, {T} *out,\n"
               "    const long long *offsets, double *partial")
_SUM_PARAMS = ("const int *node_width, long long n_nodes, const long long *offsets, long long samples,\n"
               "    long long n_chunks, const double *partial, double *constants_grad")

_PRELUDE = f"#define HS_TILE_STEPS {TILE_STEPS}\n"
_TILE_SUMS = """\
/* Sum each slot over the lanes of one node (they are width apart) in a fixed tree. */
static __device__ __forceinline__ void hs_tile_sums(const double *acc, int n, int width, int store,
                                                    double *dst, long long n_chunks)
{
    for (int k = 0; k < n; ++k) {
        double v = acc[k];
        for (int off = 16; off >= width; off >>= 1)
            v += __shfl_down_sync(0xffffffffu, v, off);
        if (store)
            dst[k * n_chunks] = v;
    }
}
"""

_WARP_LOOP = """\
    const int lane = threadIdx.x & 31;
    const long long warps = (long long)gridDim.x * (blockDim.x >> 5);
    for (long long {item} = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
         {item} < {count}; {item} += warps) {{
"""

_TILE_HEAD = """\
        const int *group = groups + 4 * (tile / n_chunks);
        const int width = group[3], per = 32 / width, member = lane & (width - 1);
        const long long chunk = tile % n_chunks, span = (long long)HS_TILE_STEPS * per;
        const long long begin = chunk * span;
        if (begin >= samples)
            continue;  /* a group narrower than the widest has fewer chunks: the whole warp skips */
        const long long end = begin + span < samples ? begin + span : samples;
        const int active = member < group[2];
        const long long node = perm[group[1] + (active ? member : 0)];
        const long long s = begin + lane / width, base = node * node_stride;
        const double *p = params + node * p_stride;
        switch (group[0]) {
"""

_SUM_BODY = """\
        const long long span = (long long)HS_TILE_STEPS * (32 / node_width[node]);
        const long long chunks = (samples + span - 1) / span;
        for (long long e = offsets[node]; e < offsets[node + 1]; ++e) {
            double v = 0.0;
            for (long long c = lane; c < chunks; c += 32)
                v += partial[e * n_chunks + c];
            for (int off = 16; off > 0; off >>= 1)
                v += __shfl_down_sync(0xffffffffu, v, off);
            if (lane == 0)
                constants_grad[e] = v;
        }
    }
}
"""


@dataclasses.dataclass(frozen=True)
class TileCase:
    """One structure as the tile kernels dispatch it."""

    case: int
    forward: str
    backward: str
    constants_grad: Optional[str]
    """The span function with the slot sums; None for a structure without constants
    (its backward runs and it has no entries) or one whose gradient could not be made."""
    n_slots: int


def render_tile_kernels(names: Dict[str, str], cases: Sequence[TileCase], ctype: str) -> str:
    """The three tile kernels and ``hs_constants_sum`` (``names``: role -> C name)."""
    params = TILE_PARAMS.format(T=ctype)
    call = "(s, end, per, base, sample_stride, a, b, g, out, p{extra})"
    kernels = []
    for role, span in (("forward_tiles", "forward"), ("backward_tiles", "backward")):
        lines = [f"        case {c.case}: if (active) {getattr(c, span)}{call.format(extra='')}; break;"
                 for c in cases]
        kernels.append(_tile_kernel(names[role], params, lines))
    lines = []
    for c in cases:
        if c.constants_grad is None:
            if not c.n_slots:  # no constants: only the input gradient
                lines.append(f"        case {c.case}: if (active) {c.backward}{call.format(extra='')}; break;")
            continue  # the backend refuses the call before launching
        zeros = ", ".join(["0.0"] * c.n_slots)
        lines += [f"        case {c.case}: {{",
                  f"            double acc[{c.n_slots}] = {{{zeros}}};",
                  f"            if (active) {c.constants_grad}{call.format(extra=', acc')};",
                  f"            hs_tile_sums(acc, {c.n_slots}, width, active && lane < width,",
                  "                         partial + offsets[node] * n_chunks + chunk, n_chunks);",
                  "            break;",
                  "        }"]
    kernels.append(_tile_kernel(names["backward_grad"], params, lines))
    kernels.append("\n".join([f'extern "C" __global__ void {names["constants_sum"]}({_SUM_PARAMS})', "{",
                              _WARP_LOOP.format(item="node", count="n_nodes") + _SUM_BODY]))
    # Only when called: an unused static function is an NVRTC warning.
    sums = _TILE_SUMS if any(c.constants_grad for c in cases) else ""
    return "\n".join(filter(None, [_PRELUDE, sums, *kernels]))


def _tile_kernel(name: str, params: str, cases: List[str]) -> str:
    lines = [f'extern "C" __global__ void {name}({params})', "{",
             _WARP_LOOP.format(item="tile", count="n_groups * n_chunks") + _TILE_HEAD.rstrip("\n"),
             *cases, "        default: break;", "        }", "    }", "}"]
    return "\n".join(lines) + "\n"


# -- host side: groups and grids (no SymPy) ------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TileTable:
    """The groups of a layer's nodes that the tile kernels give one warp each.

    Attributes
    ----------
    groups : numpy.ndarray
        int32 ``(n_groups, 4)``: case, first position in ``perm``, node count, lane width.
    perm : numpy.ndarray
        int32 node indices, a group's nodes at consecutive positions.
    node_width : numpy.ndarray
        int32, per node: the lane width of its group (``hs_constants_sum`` derives
        each node's chunk count from it).
    """

    groups: np.ndarray
    perm: np.ndarray
    node_width: np.ndarray

    @property
    def max_width(self) -> int:
        return int(self.groups[:, 3].max())


def tile_table(node_cases: Sequence[int], packed: bool) -> TileTable:
    """Group the nodes (``node_cases[j]``: node ``j``'s structure case) for the tile kernels.

    ``packed=False``: one node per group (long nodes-first rows). ``packed=True``:
    each structure's nodes in index order, 32 at a time; the last, shorter group
    gets the smallest power-of-two width that holds it.
    """
    cases = np.asarray(node_cases, dtype=np.int64)
    n = cases.size
    if not packed:
        ones = np.ones(n, dtype=np.int64)
        groups = np.stack([cases, np.arange(n), ones, ones], axis=1)
        return TileTable(groups.astype(np.int32), np.arange(n, dtype=np.int32), ones.astype(np.int32))
    perm = np.argsort(cases, kind="stable")
    ordered = cases[perm]
    rows: List[Tuple[int, int, int, int]] = []
    width = np.empty(n, dtype=np.int32)
    for case in np.unique(ordered):
        start, stop = np.searchsorted(ordered, [case, case + 1])
        for first in range(int(start), int(stop), WARP):
            count = min(WARP, int(stop) - first)
            w = 1 << (count - 1).bit_length()
            rows.append((int(case), first, count, w))
            width[perm[first:first + count]] = w
    return TileTable(np.array(rows, dtype=np.int32), perm.astype(np.int32), width)


def tile_chunks(samples: int, width: int) -> int:
    """Chunks of ``samples`` for a group of lane width ``width`` (as the kernels count them)."""
    span = TILE_STEPS * (WARP // width)
    return -(-samples // span)


@dataclasses.dataclass(frozen=True)
class TileLaunch:
    """Grids of a tile launch (any grid gives the same results) and the partials' layout."""

    grid: Tuple[int, int, int]
    sum_grid: Tuple[int, int, int]
    block: Tuple[int, int, int]
    n_chunks: int
    """Chunks of the widest group: ``partial`` has ``n_constants * n_chunks`` entries."""


def plan_tiles(table: TileTable, samples: int, sm_count: int, *, block_threads: int,
               blocks_per_sm: int, max_grid: int) -> TileLaunch:
    """Enough blocks to fill ``sm_count`` multiprocessors, never more than there are tiles."""
    warps_per_block = block_threads // WARP
    n_chunks = tile_chunks(samples, table.max_width)
    target = max(1, sm_count) * blocks_per_sm

    def blocks(warps: int) -> Tuple[int, int, int]:
        return (max(1, min(-(-warps // warps_per_block), target, max_grid)), 1, 1)

    return TileLaunch(blocks(len(table.groups) * n_chunks), blocks(table.perm.size),
                      (block_threads, 1, 1), n_chunks)
