"""The CUDA warp-tile kernels (features-last layout, constants' gradient), checked without a GPU.

* NVRTC compiles layers with constants (activations and losses), and a layer without any,
  for sm_75, sm_80 and sm_90 in both dtypes, with no warning (the whole codegen corpus,
  tile kernels included, is compiled by ``test_cuda_compile.py``).
* The node groupings (:func:`tile_table`) and grids (:func:`plan_tiles`).
* The kernels built as host C++ (``tests/cuda_emulation.py``: the lanes of a warp run in
  lock step, so the shuffle reductions are exercised) over the codegen corpus: the tile
  kernels write what the rows kernels write, bit for bit, in both layouts; the constants'
  sums match NumPy; and the sums are the same bits for every grid and block size.
"""
from __future__ import annotations

import numpy as np
import pytest

import cuda_emulation
from codegen_support import CORPUS, PARAMS
from corpus import LOSSES_WITH_CONSTANTS, WITH_CONSTANTS
from heterosymnn.backends.python import numpy_function
from heterosymnn.codegen.cuda_source import BLOCK_THREADS, NVRTC_OPTIONS, render_cuda_module
from heterosymnn.codegen.cuda_tiles import TILE_STEPS, plan_tiles, tile_chunks, tile_table
from heterosymnn.symbolic.layer import analyze
from heterosymnn.symbolic.structure import ACTIVATION, LOSS

ARCHS = ("sm_75", "sm_80", "sm_90")
DTYPES = ("float32", "float64")
LAYERS = {"activation-constants": (WITH_CONSTANTS, ACTIVATION), "loss-constants": (LOSSES_WITH_CONSTANTS, LOSS),
          "no-constants": (["relu", "tanh", "sin(num)*num"], ACTIVATION)}


# -- NVRTC -----------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_tile_kernels_compile_cleanly(nvrtc, layer, dtype, arch):
    configs, mode = LAYERS[layer]
    module = render_cuda_module(analyze(configs, mode).structures, dtype)
    assert not module.constants_grad_problems
    assert ("hs_tile_sums" in module.source) == (layer != "no-constants")
    cubin, log = nvrtc.compile(module.source, arch, NVRTC_OPTIONS, cubin=True)
    assert cubin is not None and cubin[:4] == b"\x7fELF", log
    assert log == "", f"NVRTC said something (warnings count as failures):\n{log}"


# -- groupings and grids ---------------------------------------------------------------------------
@pytest.mark.parametrize("node_cases", [[0], [3, 1, 3, 0, 1, 3], [0] * 70 + [1] * 5, list(range(40)) * 2,
                                        [2] * 32 + [0] * 33 + [1] * 17])
@pytest.mark.parametrize("packed", [False, True])
def test_tile_table_covers_every_node_once_with_one_structure_per_group(node_cases, packed):
    table = tile_table(node_cases, packed)
    assert sorted(table.perm.tolist()) == list(range(len(node_cases)))
    for case, first, count, width in table.groups.tolist():
        nodes = table.perm[first:first + count]
        assert {node_cases[n] for n in nodes} == {case}
        assert 1 <= count <= width <= 32 and width & (width - 1) == 0 and width < 2 * count
        assert (table.node_width[nodes] == width).all()
        assert list(nodes) == sorted(nodes)  # index order: adjacent nodes share a load
    assert sum(count for _, _, count, _ in table.groups.tolist()) == len(node_cases)
    if not packed:
        assert (table.groups[:, 2:] == 1).all()


def test_packed_groups_of_a_contiguous_block_are_contiguous():
    table = tile_table([5] * 40 + [2] * 3, packed=True)
    assert table.groups.tolist() == [[2, 0, 3, 4], [5, 3, 32, 32], [5, 35, 8, 8]]
    assert table.perm.tolist() == [40, 41, 42, *range(40)]


@pytest.mark.parametrize("samples", [1, 31, 32, 1024, 1025, 10**7])
def test_plan_tiles_has_a_partial_per_chunk_and_grids_within_limits(samples):
    table = tile_table([0] * 3 + [1] * 40, packed=True)  # widths 4 and 32, 8
    launch = plan_tiles(table, samples, 132, block_threads=256, blocks_per_sm=32, max_grid=2**31 - 1)
    assert launch.n_chunks == tile_chunks(samples, 32) == -(-samples // TILE_STEPS)
    assert tile_chunks(samples, 1) == -(-samples // (TILE_STEPS * 32))
    assert launch.block == (256, 1, 1) and 1 <= launch.grid[0] <= 132 * 32 and launch.grid[1:] == (1, 1)
    assert launch.grid[0] * 8 <= max(8, len(table.groups) * launch.n_chunks + 7)  # no block without a tile
    assert launch.sum_grid == (-(-43 // 8), 1, 1)


# -- host emulation ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    return cuda_emulation.build_modules(CORPUS, tmp_path_factory.mktemp("cuda_tiles_emulation"))


class _Layer:
    """The codegen corpus of one mode as a layer, three times over: node ``r`` runs structure
    ``r % n`` with PARAMS (so each structure's nodes are scattered: packed groups gather them)."""

    def __init__(self, module, mode, cols, dtype):
        self.structures = [s for s in CORPUS if s.mode == mode] * 3
        self.cases = [module.cases[s.key] for s in self.structures]
        n = len(self.structures)
        self.ids = np.array(self.cases, dtype=np.int32)
        self.params = np.tile(PARAMS, (n, 1)).astype(np.float64)
        self.offsets = np.concatenate([[0], np.cumsum([s.n_slots for s in self.structures])]).astype(np.int64)
        rng = np.random.default_rng(5)
        self.a = rng.normal(0, 2, (n, cols)).astype(dtype)
        self.b = rng.uniform(0.05, 0.95, (n, cols)).astype(dtype) if mode == LOSS else None
        self.g = rng.normal(0, 2, (n, cols)).astype(dtype) if mode == ACTIVATION else None

    def constants_sums(self):
        """NumPy reference: per constant, the float64 sum of its terms, of their magnitudes, and
        whether NumPy could print the derivative (not a Heaviside whose value at 0 is a constant)."""
        sums, scales, known = [], [], []
        for r, structure in enumerate(self.structures):
            inputs = (self.a[r],) if self.b is None else (self.a[r], self.b[r])
            for expr in structure.constant_derivatives:
                try:
                    function = numpy_function(structure, dtype=self.a.dtype, expr=expr)
                except TypeError:
                    sums.append(np.nan), scales.append(np.nan), known.append(False)
                    continue
                with np.errstate(all="ignore"):
                    terms = np.broadcast_to(function(*inputs, *self.params[r, :structure.n_slots]), self.a[r].shape)
                    if self.g is not None:
                        terms = self.g[r] * terms
                sums.append(np.sum(terms, dtype=np.float64))
                scales.append(np.sum(np.abs(terms), dtype=np.float64))
                known.append(True)
        return np.array(sums), np.array(scales), np.array(known)


def _run(emulated, dtype, layer, role, grid, block, features_last, packed):
    """Launch a tile kernel (and the sums, for backward_grad) the way the backend does."""
    module, lib = emulated[dtype]
    n, cols = layer.a.shape
    lay = (lambda v: None if v is None else np.ascontiguousarray(v.T)) if features_last else (lambda v: v)
    table = tile_table(layer.cases, packed)
    launch = plan_tiles(table, cols, 1, block_threads=BLOCK_THREADS, blocks_per_sm=1, max_grid=2**31 - 1)
    out = np.full_like(lay(layer.a), 12345.0)
    partial = np.full(int(layer.offsets[-1]) * launch.n_chunks, np.nan)
    stride = (1, n) if features_last else (cols, 1)
    cuda_emulation.launch(lib, module.kernels[role], grid or launch.grid, block, (
        table.groups.reshape(-1), len(table.groups), table.perm, layer.params, layer.params.shape[1], *stride,
        cols, launch.n_chunks, lay(layer.a), lay(layer.b), lay(layer.g), out, layer.offsets, partial))
    cg = np.full(int(layer.offsets[-1]), UNWRITTEN)
    if role == "backward_grad":
        cuda_emulation.launch(lib, module.kernels["constants_sum"], grid or launch.sum_grid, block, (
            table.node_width, n, layer.offsets, cols, launch.n_chunks, partial, cg))
    return (out.T if features_last else out), cg


def _rows(emulated, dtype, layer, direction):
    module, lib = emulated[dtype]
    out = np.full_like(layer.a, 12345.0)
    cuda_emulation.launch(lib, module.kernels[f"{direction}_rows"], (2, 3), (64, 1, 1), (
        layer.ids, layer.params, layer.params.shape[1], *layer.a.shape, layer.a, layer.b, layer.g, out))
    return out


UNWRITTEN = -7.75e300
# Packed groups here hold 3 nodes in 4 lanes: 8 samples a step, 256 a chunk.
LAYOUTS = {"rows-long": (False, False, 1500), "rows-short": (False, True, 20), "features-last": (True, True, 600)}
GRIDS = {"planned": (None, (BLOCK_THREADS, 1, 1)), "odd": ((3,), (64, 1, 1)), "one-warp": ((1,), (32, 1, 1))}


@pytest.mark.parametrize("grid", sorted(GRIDS))
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("mode", [ACTIVATION, LOSS])
@pytest.mark.parametrize("dtype", DTYPES)
def test_emulated_tile_kernels_match_the_rows_kernels_and_numpy(emulated, dtype, mode, layout, grid):
    features_last, packed, cols = LAYOUTS[layout]
    layer = _Layer(emulated[dtype][0], mode, cols, dtype)
    run = (emulated, dtype, layer)
    for direction in ("forward", "backward"):
        out, _ = _run(*run, f"{direction}_tiles", *GRIDS[grid], features_last, packed)
        np.testing.assert_array_equal(out, _rows(*run, direction), err_msg=f"{direction}_tiles")
    out, cg = _run(*run, "backward_grad", *GRIDS[grid], features_last, packed)
    np.testing.assert_array_equal(out, _rows(*run, "backward"), err_msg="backward_grad's input gradient")
    want, scale, known = layer.constants_sums()
    assert not (cg == UNWRITTEN).any(), "a constant's entry was not written"
    tolerance = {"float32": 3e-5, "float64": 1e-12}[dtype] * scale + 1e-300
    bad = known & ~(np.abs(cg - want) <= tolerance) & ~(np.isnan(cg) & np.isnan(want))
    assert not bad.any(), f"constants {np.flatnonzero(bad)}: got {cg[bad]}, want {want[bad]}"
    planned, _ = GRIDS["planned"]
    _, reference = _run(*run, "backward_grad", planned, (BLOCK_THREADS, 1, 1), features_last, packed)
    np.testing.assert_array_equal(cg, reference, err_msg="the grid changed the sums")


# -- the emulation itself --------------------------------------------------------------------------
_SHUFFLES = """
extern "C" __global__ void warp_sum(const double *x, double *y, int early)
{
    const int lane = threadIdx.x & 31;
    if (early && lane == 5)
        return;  /* leaves the warp's shuffle below: undefined on a GPU, an error here */
    double v = x[threadIdx.x];
    for (int off = 16; off > 0; off >>= 1)
        v += __shfl_down_sync(0xffffffffu, v, off);
    if (lane == 0)
        y[threadIdx.x >> 5] = v;
}
"""


def test_the_emulation_runs_warps_in_lock_step_and_catches_lanes_that_leave(tmp_path):
    if not cuda_emulation.have_gxx():
        pytest.skip("no g++ to build the host emulation of the CUDA kernels")
    lib = cuda_emulation.build(_SHUFFLES, ["warp_sum"], "float64", tmp_path)
    x = np.arange(64, dtype=np.float64)
    y = np.zeros(2)
    cuda_emulation.launch(lib, "warp_sum", (1,), (64, 1, 1), (x, y, 0))
    assert y.tolist() == [sum(range(32)), sum(range(32, 64))]
    with pytest.raises(AssertionError, match="waited at a shuffle"):
        cuda_emulation.launch(lib, "warp_sum", (1,), (64, 1, 1), (x, y, 1))
