"""CPU_JIT features last (PyTorch's ``(..., n_nodes)``): every result equals the nodes-first
result of the transposed input, bit for bit (NaN for NaN), on one thread and on two.

Shapes cover one sample, ragged tiles (the driver works on tiles of TILE_SAMPLES samples x
NODE_BLOCK_BYTES of nodes), several tiles and node blocks, and the parallel path.
"""
from __future__ import annotations

import numpy as np
import pytest

from corpus import ACTIVATIONS, WITH_CONSTANTS
from heterosymnn import SymbolicJITCompiler, ToolchainNotFoundError, config
from heterosymnn.codegen.c_runtime import TILE_SAMPLES
from heterosymnn.toolchains import find_toolchain

try:  # these tests build with the real compiler; without any, CPU_JIT cannot be tested here
    find_toolchain()
except ToolchainNotFoundError as _exc:
    pytest.skip(f"no usable C toolchain for CPU_JIT: {_exc}", allow_module_level=True)

#: 13 nodes (one node block), and 70 (two blocks of float32, three of float64, ragged).
LAYERS = {"13": list(WITH_CONSTANTS),
          "70": [([c for c, _, _ in ACTIVATIONS] + list(WITH_CONSTANTS))[i % 40] for i in range(70)]}
LEADING = [(1,), (7,), (2, 3), (TILE_SAMPLES + 1,), (3 * TILE_SAMPLES - 5,), (1000,)]


@pytest.fixture(scope="module")
def compilers(tmp_path_factory):
    """(layer, dtype, threads) -> CPU_JIT compiler, all built into one module cache."""
    result = {}
    with config.override(cache_dir=str(tmp_path_factory.mktemp("layout_cache"))):
        for name, configs in LAYERS.items():
            for dtype in ("float32", "float64"):
                for threads in (1, 2):
                    with config.override(num_threads=threads):
                        result[name, dtype, threads] = SymbolicJITCompiler(configs, "CPU_JIT", dtype=dtype,
                                                                           strict=True)
    return result


def _same(first, second):
    """Bit for bit, but for which NaN: g*d with both NaN may give either NaN."""
    assert first.shape == second.shape and first.dtype == second.dtype
    nan = np.isnan(first)
    np.testing.assert_array_equal(nan, np.isnan(second))
    assert first[~nan].tobytes() == second[~nan].tobytes()


def _features(leading, n, dtype, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(leading + (n,)) * 2).astype(dtype)
    flat = x.reshape(-1, n)
    flat[:3, :3] = [[np.nan, np.inf, -np.inf], [0.0, -0.0, 1e30], [-1e30, 5e-39, 0.5]][:flat.shape[0]]
    return x


def _rows(x, n):
    """The nodes-first copy: node j's samples in row j."""
    return np.ascontiguousarray(x.reshape(-1, n).T)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layer", sorted(LAYERS))
@pytest.mark.parametrize("leading", LEADING, ids=str)
def test_equal_to_nodes_first_of_the_transpose(compilers, layer, dtype, threads, leading):
    comp = compilers[layer, dtype, threads]
    n = comp.n_nodes
    x, g = _features(leading, n, dtype, 0), _features(leading, n, dtype, 1)
    rows, grows = _rows(x, n), _rows(g, n)

    forward = comp.forward_kernel(x, features_last=True)
    assert forward.shape == x.shape
    _same(_rows(forward, n), comp.forward_kernel(rows))
    _same(_rows(comp.backward_kernel(x, g, features_last=True), n), comp.backward_kernel(rows, grows))

    cg_last, cg_first = np.full(len(comp.constant_names), 7.0), np.full(len(comp.constant_names), 7.0)
    backward = comp.backward_kernel(x, g, features_last=True, constants_grad=cg_last)
    _same(_rows(backward, n), comp.backward_kernel(rows, grows, constants_grad=cg_first))
    _same(cg_last, cg_first)
    assert np.isfinite(cg_first).sum() > 0


def test_the_thread_count_changes_no_bit(compilers):
    n = compilers["70", "float32", 1].n_nodes
    x, g = _features((1000,), n, "float32", 2), _features((1000,), n, "float32", 3)
    results = []
    for threads in (1, 2):
        comp = compilers["70", "float32", threads]
        cg = np.zeros(len(comp.constant_names))
        out = comp.backward_kernel(x, g, features_last=True, constants_grad=cg)
        results.append((comp.forward_kernel(x, features_last=True), comp.backward_kernel(x, g, features_last=True),
                        out, cg))
    for first, second in zip(*results):
        _same(first, second)


def test_in_place_and_out(compilers):
    comp = compilers["13", "float64", 2]
    n = comp.n_nodes
    x, g = _features((300,), n, "float64", 4), _features((300,), n, "float64", 5)
    forward, backward = comp.forward_kernel(x, features_last=True), comp.backward_kernel(x, g, features_last=True)
    z = x.copy()
    assert comp.forward_kernel(z, z, features_last=True) is z
    _same(z, forward)
    grad = g.copy()
    assert comp.backward_kernel(x, grad, grad, features_last=True) is grad
    _same(grad, backward)
    z = x.copy()
    assert comp.backward_kernel(z, g, z, features_last=True) is z
    _same(z, backward)
    cg, cg_in_place = np.zeros(len(comp.constant_names)), np.zeros(len(comp.constant_names))
    comp.backward_kernel(x, g, features_last=True, constants_grad=cg)
    for inputs in ((x.copy(), g), (x, g.copy())):
        target = inputs[0] if inputs[0] is not x else inputs[1]
        comp.backward_kernel(*inputs, target, features_last=True, constants_grad=cg_in_place)
        _same(target, backward)
        _same(cg_in_place, cg)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_loss_per_output_column(dtype):
    losses = ["mse", ("huber", {"delta": 0.5}), "mae", ("quantile", {"tau": 0.3})]
    comp = SymbolicJITCompiler(losses, "CPU_JIT", mode="loss", dtype=dtype, strict=True)
    rng = np.random.default_rng(6)
    y_pred, y_true = (rng.normal(size=(2 * TILE_SAMPLES + 3, len(losses))).astype(dtype) for _ in range(2))
    rows_p, rows_t = _rows(y_pred, len(losses)), _rows(y_true, len(losses))
    _same(_rows(comp.forward_kernel(y_pred, y_true, features_last=True), len(losses)),
          comp.forward_kernel(rows_p, rows_t))
    cg_last, cg_first = np.zeros(len(comp.constant_names)), np.zeros(len(comp.constant_names))
    _same(_rows(comp.backward_kernel(y_pred, y_true, features_last=True, constants_grad=cg_last), len(losses)),
          comp.backward_kernel(rows_p, rows_t, constants_grad=cg_first))
    _same(cg_last, cg_first)
