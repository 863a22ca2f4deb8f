"""GPU_CUDA's launch arithmetic, apart from the code generator so it needs no SymPy.

A warm GPU construction loads a cached cubin and plans its launches; nothing
here touches expressions, so the backend imports this module, never
:mod:`~heterosymnn.codegen.cuda_source` (which imports SymPy). The thread
mapping is described in :mod:`~heterosymnn.codegen.cuda_source`.
"""
from __future__ import annotations

import dataclasses
from typing import Tuple

#: Options every generated CUDA source is compiled with, whatever the compiler: ``--fmad=false``
#: keeps ``a*b + c`` rounded twice like NumPy (and like the C kernels).
CUDA_OPTIONS: Tuple[str, ...] = ("--fmad=false",)
#: Threads per block of both kernels.
BLOCK_THREADS = 256
#: Rows shorter than this take the one-thread-per-element kernel.
ROW_KERNEL_MIN_COLS = 32
#: Resident blocks aimed for per multiprocessor; more only adds scheduling.
BLOCKS_PER_SM = 32
_MAX_GRID_Y = 65535
_MAX_GRID_X = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class Launch:
    """Which kernel runs a ``(rows, cols)`` shape, and its grid."""

    kind: str  # "rows" or "elems"
    grid: Tuple[int, int, int]
    block: Tuple[int, int, int]


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
