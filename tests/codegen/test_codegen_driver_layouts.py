"""The driver's other entries, called directly: ``hs_run_cgrad_*`` (nodes first, with the
constants' gradient) and ``hs_run_fl_*`` (features last), against ``hs_run_*``.

Every result must be the same bits in both layouts, serially and on two threads. Run on the
production build (AVX block transposes where the host has them) and on a baseline x86-64 build
of the driver (the plain C transposes).
"""
from __future__ import annotations

import platform

import numpy as np
import pytest

from codegen_support import ACTIVATION, CORPUS, DTYPES, PARAMS, activation_inputs, build_cffi, grad_inputs
from heterosymnn.codegen import render_runtime

ACTIVATIONS = [s for s in CORPUS if s.mode == ACTIVATION]
LOSSES = [s for s in CORPUS if s.mode != ACTIVATION]
# (rows, samples): one sample; tails of every kind; more than one tile and node block; and a
# layer big enough for the parallel path (rows*samples >= PARALLEL_MIN_ELEMENTS).
SHAPES = [(3, 1), (5, 7), (70, 129), (29, 300), (67, 1100)]


@pytest.fixture(scope="module", params=["production", "baseline"])
def driver(request, built, tmp_path_factory):
    """(dtype -> (runtime module, RuntimeSource)) for one build of the driver."""
    if request.param == "production":
        return {dtype: (built[dtype].runtime, built[dtype].rsource) for dtype in DTYPES}
    if platform.machine() != "x86_64":
        pytest.skip("the baseline build is for x86-64")
    root = tmp_path_factory.mktemp("baseline_driver")
    modules = {}
    for dtype in DTYPES:
        source = render_runtime(dtype)
        module = build_cffi(root / dtype, f"_hs_test_plain_runtime_{dtype[-2:]}", source.cdef, source.source,
                            extra_compile_args=["-O2", "-march=x86-64", "-fopenmp"], extra_link_args=["-fopenmp"])
        modules[dtype] = (module, source)
    return modules


class Layer:
    """Function tables of ``structures`` (row r uses structures[r % len]) for one driver build."""

    def __init__(self, built, runtime, rsource, structures, rows):
        self.ffi, self.lib, self.rs, self.dtype = runtime.ffi, runtime.lib, rsource, built.dtype
        self.fwd = self.ffi.new(f"{rsource.row_fn_type}[]", rows)
        self.bwd = self.ffi.new(f"{rsource.row_fn_type}[]", rows)
        self.cg = self.ffi.new(f"{rsource.cgrad_fn_type}[]", rows)

        address = built.address
        counts = []
        for r in range(rows):
            s = structures[r % len(structures)]
            forward, backward = built.cmodule.functions[s.key]
            self.fwd[r] = self.ffi.cast(rsource.row_fn_type, address(forward))
            self.bwd[r] = self.ffi.cast(rsource.row_fn_type, address(backward))
            if s.key in built.cmodule.constants_grad:
                self.cg[r] = self.ffi.cast(rsource.cgrad_fn_type, address(built.cmodule.constants_grad[s.key]))
            counts.append(s.n_slots)
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.params = np.ascontiguousarray(np.tile(PARAMS, (rows, 1)))

    def _ptr(self, array, kind=None):
        kind = kind or ("float *" if self.dtype == "float32" else "double *")
        return self.ffi.NULL if array is None else self.ffi.cast(kind, self.ffi.from_buffer(array))

    def run(self, which, a, b=None, g=None, *, features_last=False, cgrad=False, nthreads=1):
        """(out, constants_grad or None) of one call; ``a`` is (rows, samples) or its transpose."""
        out = np.full_like(a, 12345.0)
        rows = a.shape[1] if features_last else a.shape[0]
        grad = np.full(self.offsets[-1], np.nan) if cgrad else None
        table = self.fwd if which == "fwd" else self.bwd
        common = (self._ptr(a), self._ptr(b), self._ptr(g), self._ptr(out), self._ptr(self.params, "double *"),
                  self.params.shape[1])
        extra = (self._ptr(self.offsets, "int64_t *"), self._ptr(grad, "double *")) if cgrad \
            else (self.ffi.NULL, self.ffi.NULL)
        if features_last:
            status = getattr(self.lib, self.rs.features_last_name)(
                table, self.cg if cgrad else self.ffi.NULL, rows, a.size // rows, *common, *extra, nthreads)
        elif cgrad:
            status = getattr(self.lib, self.rs.cgrad_name)(table, self.cg, rows, a.size // rows, *common, *extra,
                                                          nthreads)
        else:
            status = 0
            getattr(self.lib, self.rs.run_name)(table, rows, a.size // rows, *common, nthreads)
        assert status == 0
        return out, grad


def _inputs(rows, samples, dtype, seed=0):
    rng = np.random.default_rng(seed)
    pool = activation_inputs(dtype)
    a = rng.choice(pool, size=(rows, samples)).astype(dtype)
    g = rng.choice(grad_inputs(pool.size, dtype), size=(rows, samples)).astype(dtype)
    return a, g


def _same(first, second):
    """The same bits, but for which NaN: g*d with both NaN may give either (the backward
    features last multiplies by g outside the row function, see c_features_last)."""
    assert first.shape == second.shape
    nan = np.isnan(first)
    np.testing.assert_array_equal(nan, np.isnan(second))
    assert first[~nan].tobytes() == second[~nan].tobytes()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows, samples", SHAPES)
def test_features_last_and_constants_grad_equal_nodes_first(built, driver, dtype, rows, samples):
    runtime, rsource = driver[dtype]
    layer = Layer(built[dtype], runtime, rsource, ACTIVATIONS, rows)
    a, g = _inputs(rows, samples, dtype)
    at, gt = np.ascontiguousarray(a.T), np.ascontiguousarray(g.T)
    forward = layer.run("fwd", a)[0]
    backward = layer.run("bwd", a, g=g)[0]
    out, grad = layer.run("bwd", a, g=g, cgrad=True)
    _same(out, backward)
    for nthreads in (1, 2):
        _same(layer.run("fwd", at, features_last=True, nthreads=nthreads)[0].T, forward)
        _same(layer.run("bwd", at, g=gt, features_last=True, nthreads=nthreads)[0].T, backward)
        out_t, grad_t = layer.run("bwd", at, g=gt, features_last=True, cgrad=True, nthreads=nthreads)
        _same(out_t.T, backward)
        _same(grad_t, grad)
        _same(layer.run("bwd", a, g=g, cgrad=True, nthreads=nthreads)[1], grad)
        _same(layer.run("fwd", a, nthreads=nthreads)[0], forward)


@pytest.mark.parametrize("dtype", DTYPES)
def test_loss_rows_features_last(built, driver, dtype):
    runtime, rsource = driver[dtype]
    rows, samples = 2 * len(LOSSES), 300
    layer = Layer(built[dtype], runtime, rsource, LOSSES, rows)
    rng = np.random.default_rng(1)
    yp = rng.uniform(-0.5, 1.5, (rows, samples)).astype(dtype)
    yt = rng.choice([0.0, 1.0, 0.3], (rows, samples)).astype(dtype)
    ypt, ytt = np.ascontiguousarray(yp.T), np.ascontiguousarray(yt.T)
    for which in ("fwd", "bwd"):
        _same(layer.run(which, ypt, b=ytt, features_last=True)[0].T, layer.run(which, yp, b=yt)[0])
    out, grad = layer.run("bwd", yp, b=yt, cgrad=True)
    out_t, grad_t = layer.run("bwd", ypt, b=ytt, features_last=True, cgrad=True)
    _same(out_t.T, out)
    _same(grad_t, grad)
    assert np.isfinite(grad).all()


def test_empty_calls_write_zero_gradients(built, driver):
    runtime, rsource = driver["float64"]
    layer = Layer(built["float64"], runtime, rsource, ACTIVATIONS, 4)
    empty = np.zeros((4, 0))
    assert not layer.run("bwd", empty, g=empty, cgrad=True)[1].any()
    assert not layer.run("bwd", empty.T.copy(), g=empty.T.copy(), features_last=True, cgrad=True)[1].any()
