"""GPU_CUDA's warp-tile launches: the features-last layout and the constants' gradient.

The kernels are described in :mod:`heterosymnn.codegen.cuda_tiles`. Here, per
layer: the two node groupings (one node per warp for nodes-first rows of at
least a warp; each structure's nodes packed up to 32 to a warp otherwise) and
the constants' offsets, copied once to each device; per call: the grids (cached
per shape, like the rows kernels'), one scratch buffer of partial sums from
CuPy's memory pool, and the launches, all on CuPy's current stream.

Which grouping and chunking a call uses depends only on the layer, the shape
and the layout, so the same inputs give the same constants' gradient bits on
every device and every run; nodes-first and features-last calls of one shape
may add in different orders (different groupings) and agree to rounding.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..codegen.cuda_launch import BLOCK_THREADS, BLOCKS_PER_SM, ROW_KERNEL_MIN_COLS
from ..codegen.cuda_tiles import TileLaunch, TileTable, plan_tiles, tile_table
from ..errors import FormulaParsingError

_MAX_GRID_X = 2**31 - 1
SINGLE, PACKED = "single", "packed"


@dataclasses.dataclass(frozen=True)
class TileArrays:
    """One device's copies of a layer's groupings (name -> groups, perm, node widths) and offsets."""

    tables: Dict[str, Tuple[Any, Any, Any]]
    offsets: Any


class TileLayer:
    """What the tile kernels need of one layer, on the host; see the module doc."""

    def __init__(self, plan: Any, module: Any):
        node_cases = [module.cases[plan.structure_keys[s]] for s in plan.node_structure]
        self.tables: Dict[str, TileTable] = {SINGLE: tile_table(node_cases, packed=False),
                                             PACKED: tile_table(node_cases, packed=True)}
        self.n_nodes = plan.n_nodes
        self.n_constants = plan.n_constants
        self._offsets = np.ascontiguousarray(plan.constant_offsets(), dtype=np.int64)
        self.problem: Optional[str] = None
        for node, index in enumerate(plan.node_structure):
            problem = module.constants_grad_problems.get(plan.structure_keys[index])
            if problem is not None and plan.structure_slots[index]:
                self.problem = f"node {node}: {problem}"
                break

    def device_arrays(self, cp: Any) -> TileArrays:
        """Copies on the current device (call under ``cupy.cuda.Device``)."""
        tables = {name: (cp.asarray(t.groups.reshape(-1)), cp.asarray(t.perm), cp.asarray(t.node_width))
                  for name, t in self.tables.items()}
        return TileArrays(tables, cp.asarray(self._offsets))

    def grouping(self, samples: int, features_last: bool) -> str:
        """Long nodes-first rows: a node per warp, lanes on consecutive columns; else packed."""
        return PACKED if features_last or samples < ROW_KERNEL_MIN_COLS else SINGLE

    def plan(self, grouping: str, samples: int, sm_count: int) -> TileLaunch:
        return plan_tiles(self.tables[grouping], samples, sm_count, block_threads=BLOCK_THREADS,
                          blocks_per_sm=BLOCKS_PER_SM, max_grid=_MAX_GRID_X)

    def check_constants_grad(self) -> None:
        if self.problem is not None:
            raise FormulaParsingError(f"the constants' gradient cannot be computed: {self.problem}")


def launch_tiles(cp: Any, functions: Dict[str, Any], arrays: TileArrays, layer: TileLayer, launch: TileLaunch,
                 role: str, grouping: str, features_last: bool, params: Any, p_stride: np.int64,
                 inputs: Tuple[Any, Any, Any, Any], constants_grad: Any = None) -> None:
    """Queue ``role``'s tile kernel (and, with ``constants_grad``, the sums) on the current stream.

    ``inputs`` is ``(a, b, g, out)``; the current device must be the arrays' device.
    """
    a = inputs[0]
    samples = a.size // layer.n_nodes
    node_stride, sample_stride = (1, layer.n_nodes) if features_last else (samples, 1)
    groups, perm, widths = arrays.tables[grouping]
    n_chunks = np.int64(launch.n_chunks)
    partial = None
    if constants_grad is not None:
        # From CuPy's pool on the current stream: freed below, reused only by later work.
        partial = cp.empty(layer.n_constants * launch.n_chunks, dtype=np.float64)
    functions[role](launch.grid, launch.block, (
        groups, np.int64(groups.size // 4), perm, params, p_stride, np.int64(node_stride),
        np.int64(sample_stride), np.int64(samples), n_chunks, *inputs, arrays.offsets, partial))
    if constants_grad is not None:
        functions["constants_sum"](launch.sum_grid, launch.block, (
            widths, np.int64(layer.n_nodes), arrays.offsets, np.int64(samples), n_chunks, partial,
            constants_grad))
