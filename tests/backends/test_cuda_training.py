"""GPU_CUDA's constants' gradient and features-last layout, against CPU_PYTHON.

Two halves with the same checks: on a simulated CuPy whose kernels are the generated CUDA
built for the host (``tests/cuda_emulation.py``: warps run in lock step, so the shuffles of
the reductions are exercised), and, marked ``gpu``, on a real GPU (skipped without one).
Without a GPU only the first half runs; the second must be run on a GPU machine.

The constants' gradient is compared per entry with a tolerance relative to the sum of the
absolute terms (the terms are computed in the layer's dtype by both backends, summed in
float64 in different orders): NumPy float64 evaluation of each term gives that scale.
"""
from __future__ import annotations

import numpy as np
import pytest

import cuda_emulation
from corpus import LOSSES_WITH_CONSTANTS, WITH_CONSTANTS
from heterosymnn import FormulaParsingError, SymbolicJITCompiler
from heterosymnn.backends.python import numpy_function
from heterosymnn.symbolic.layer import analyze


def _gpu_count() -> int:
    try:
        import cupy

        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # no CuPy, a broken CuPy, no driver: no GPU for these tests
        return 0


gpu = pytest.mark.gpu
needs_gpu = pytest.mark.skipif(_gpu_count() == 0, reason="needs CuPy and at least one CUDA device")
DTYPES = ("float32", "float64")
# Per entry: |gpu - cpu| <= sum over its terms of (RTOL * |term| + ATOL): the terms of the two
# backends differ by a few ulps, more where they cancel (1 - tanh(x)**2 near saturation).
RTOL = {"float32": 3e-5, "float64": 1e-12}
ATOL = {"float32": 3e-7, "float64": 1e-15}
RTOL_OUT = {"float32": 3e-5, "float64": 1e-11}


@pytest.fixture
def sim(monkeypatch, tmp_path):
    return cuda_emulation.simulated_cupy(monkeypatch, tmp_path)


@pytest.fixture
def cp():
    import cupy

    return cupy


# -- references ----------------------------------------------------------------------------------
def _term_scale(configs, mode, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per constant: the sum over its node's row of |term| in float64 (``a``, ``b`` nodes first)."""
    layer = analyze(configs, mode)
    plan, params = layer.plan, layer.plan.initial_params()
    a, b = a.astype(np.float64), b.astype(np.float64)
    scale = []
    for node, index in enumerate(plan.node_structure):
        structure = layer.structures[index]
        inputs = (a[node],) if mode == "activation" else (a[node], b[node])
        for expr in structure.constant_derivatives:
            with np.errstate(all="ignore"):
                terms = numpy_function(structure, expr=expr)(*inputs, *params[node, :structure.n_slots])
                terms = np.broadcast_to(terms, a[node].shape) * (b[node] if mode == "activation" else 1.0)
            scale.append(float(np.sum(np.abs(terms))))
    return np.array(scale)


def _check_constants_grad(got, want, scale, n_terms, dtype, what):
    got = np.asarray(got)
    # The inputs are finite and so is every term: a NaN is an entry the kernels did not write.
    assert got.dtype == np.float64 and not np.isnan(got).any(), f"{what}: an entry left unwritten"
    bad = np.abs(got - want) > RTOL[dtype] * scale + ATOL[dtype] * n_terms
    assert not bad.any(), (f"{what}: entries {np.flatnonzero(bad).tolist()}: got {got[bad]}, want {want[bad]}, "
                           f"scale {scale[bad]}")


def _close(got, want, dtype, what):
    np.testing.assert_allclose(np.asarray(got), want, rtol=RTOL_OUT[dtype], atol=RTOL_OUT[dtype], equal_nan=True,
                               err_msg=what)


def _inputs(rows, cols, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1.5, (rows, cols)).astype(dtype), rng.normal(size=(rows, cols)).astype(dtype)


def _configs(n_nodes):
    return [WITH_CONSTANTS[i % len(WITH_CONSTANTS)] for i in range(n_nodes)]


def _layout(features_last):
    """Nodes-first 2-D arrays as the call takes them."""
    return (lambda v: np.ascontiguousarray(v.T)) if features_last else (lambda v: v)


def check_activation(xp, asnumpy, n_nodes, batch, dtype, features_last):
    configs, layout = _configs(n_nodes), _layout(features_last)
    z, g = _inputs(n_nodes, batch, dtype)
    gpu_comp = SymbolicJITCompiler(configs, "GPU_CUDA", dtype=dtype, strict=True)
    assert gpu_comp.calculation_method == "GPU_CUDA"
    results = []
    for _ in range(2):  # deterministic: the same call again gives the same bits
        cg = xp.asarray(np.full(len(gpu_comp.constant_names), np.nan))
        out = gpu_comp.backward_kernel(xp.asarray(layout(z)), xp.asarray(layout(g)), constants_grad=cg,
                                       features_last=features_last)
        results.append((asnumpy(out), asnumpy(cg)))
    (out, cg), (_, again) = results
    np.testing.assert_array_equal(again, cg)
    want_cg = np.zeros(len(cg))
    want_out = SymbolicJITCompiler(configs, "CPU_PYTHON", dtype=dtype).backward_kernel(
        layout(z), layout(g), constants_grad=want_cg, features_last=features_last)
    what = f"({n_nodes}, {batch}) {dtype} features_last={features_last}"
    _close(out, want_out, dtype, f"{what} backward")
    _check_constants_grad(cg, want_cg, _term_scale(configs, "activation", z, g), batch, dtype, what)
    # The input gradient is the plain backward's, bit for bit, in either layout; so is the forward.
    np.testing.assert_array_equal(layout(asnumpy(gpu_comp.backward_kernel(xp.asarray(z), xp.asarray(g)))), out)
    if features_last:
        forward = asnumpy(gpu_comp.forward_kernel(xp.asarray(layout(z)), features_last=True))
        np.testing.assert_array_equal(forward, layout(asnumpy(gpu_comp.forward_kernel(xp.asarray(z)))))


def check_losses(xp, asnumpy, dtype, features_last):
    y_pred, y_true = _inputs(len(LOSSES_WITH_CONSTANTS), 300, dtype, seed=3)
    y_true = np.abs(y_true) % 1
    layout = _layout(features_last)
    gpu_comp = SymbolicJITCompiler(LOSSES_WITH_CONSTANTS, "GPU_CUDA", mode="loss", dtype=dtype, strict=True)
    cpu_comp = SymbolicJITCompiler(LOSSES_WITH_CONSTANTS, "CPU_PYTHON", mode="loss", dtype=dtype)
    cg = xp.asarray(np.full(len(gpu_comp.constant_names), np.nan))
    out = gpu_comp.backward_kernel(xp.asarray(layout(y_pred)), xp.asarray(layout(y_true)), constants_grad=cg,
                                   features_last=features_last)
    want = np.zeros(len(cg))
    want_out = cpu_comp.backward_kernel(layout(y_pred), layout(y_true), constants_grad=want,
                                        features_last=features_last)
    _close(asnumpy(out), want_out, dtype, "per-output losses")
    scale = _term_scale(LOSSES_WITH_CONSTANTS, "loss", y_pred, y_true)
    _check_constants_grad(asnumpy(cg), want, scale, y_pred.shape[1], dtype,
                          f"per-output losses, features_last={features_last}")
    for config in LOSSES_WITH_CONSTANTS:  # one config: element-wise over any shape, one sum
        single = SymbolicJITCompiler([config], "GPU_CUDA", mode="loss", dtype=dtype, strict=True)
        reference = SymbolicJITCompiler([config], "CPU_PYTHON", mode="loss", dtype=dtype)
        flat_pred, flat_true = y_pred.reshape(2, -1), y_true.reshape(2, -1)
        cg = xp.asarray(np.full(len(single.constant_names), np.nan))
        single.backward_kernel(xp.asarray(flat_pred), xp.asarray(flat_true), constants_grad=cg)
        want = np.zeros(len(cg))
        reference.backward_kernel(flat_pred, flat_true, constants_grad=want)
        scale = _term_scale([config], "loss", flat_pred.reshape(1, -1), flat_true.reshape(1, -1))
        _check_constants_grad(asnumpy(cg), want, scale, y_pred.size, dtype, f"element-wise {config}")


def check_weighted_losses(xp, asnumpy, dtype, features_last):
    """``grad=w``: ``w * dL/dy_pred`` (the unweighted call times ``w``, bit for bit) and the sums of
    ``w * dL/dc``, per-output losses and one loss over every element, against CPU_PYTHON."""
    y_pred, w = _inputs(len(LOSSES_WITH_CONSTANTS), 300, dtype, seed=5)
    y_true = np.abs(_inputs(len(LOSSES_WITH_CONSTANTS), 300, dtype, seed=6)[1]) % 1
    layout = _layout(features_last)
    what = f"weighted losses, {dtype}, features_last={features_last}"
    for configs, shape in ((LOSSES_WITH_CONSTANTS, None), (LOSSES_WITH_CONSTANTS[:1], (3, 60, 5))):
        single = shape is not None  # one config: element-wise over any shape
        arrays = [v.reshape(shape) if single else layout(v) for v in (y_pred, y_true, w)]
        keywords = {} if single else {"features_last": features_last}
        gpu_comp = SymbolicJITCompiler(configs, "GPU_CUDA", mode="loss", dtype=dtype, strict=True)
        cpu_comp = SymbolicJITCompiler(configs, "CPU_PYTHON", mode="loss", dtype=dtype)
        cg = xp.asarray(np.full(len(gpu_comp.constant_names), np.nan))
        device = [xp.asarray(v) for v in arrays]
        out = asnumpy(gpu_comp.backward_kernel(*device[:2], grad=device[2], constants_grad=cg, **keywords))
        plain = asnumpy(gpu_comp.backward_kernel(*device[:2], **keywords))
        np.testing.assert_array_equal(out, arrays[2] * plain)
        np.testing.assert_array_equal(asnumpy(gpu_comp.backward_kernel(*device[:2], grad=device[2], **keywords)),
                                      out)
        want = np.zeros(len(cg))
        _close(out, cpu_comp.backward_kernel(*arrays[:2], grad=arrays[2], constants_grad=want, **keywords),
               dtype, what)
        pred, true = (y_pred.reshape(1, -1), y_true.reshape(1, -1)) if single else (y_pred, y_true)
        weights = w.reshape(1, -1) if single else w
        scale = _weighted_term_scale(configs, pred, true, weights)
        _check_constants_grad(asnumpy(cg), want, scale, y_pred.size, dtype, what)


def _weighted_term_scale(configs, y_pred, y_true, w) -> np.ndarray:
    """Per constant: the sum over its node's row of |w * dL/dc| in float64 (nodes first)."""
    layer = analyze(configs, "loss")
    plan, params = layer.plan, layer.plan.initial_params()
    scale = []
    for node, index in enumerate(plan.node_structure):
        structure = layer.structures[index]
        for expr in structure.constant_derivatives:
            with np.errstate(all="ignore"):
                terms = numpy_function(structure, expr=expr)(y_pred[node].astype(np.float64),
                                                             y_true[node].astype(np.float64),
                                                             *params[node, :structure.n_slots])
            scale.append(float(np.sum(np.abs(np.broadcast_to(terms, w[node].shape) * w[node]))))
    return np.array(scale)


# -- on the simulated CuPy ---------------------------------------------------------------------
SHAPES = [(13, 1), (13, 5), (40, 33), (3, 2500), (70, 5)]


@pytest.mark.parametrize("features_last", [False, True], ids=["nodes_first", "features_last"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_nodes, batch", SHAPES)
def test_simulated_constants_grad_matches_cpu_python(sim, n_nodes, batch, dtype, features_last):
    check_activation(sim.module, np.asarray, n_nodes, batch, dtype, features_last)


@pytest.mark.parametrize("features_last", [False, True], ids=["nodes_first", "features_last"])
def test_simulated_losses_constants_grad(sim, features_last):
    check_losses(sim.module, np.asarray, "float64", features_last)


@pytest.mark.parametrize("features_last", [False, True], ids=["nodes_first", "features_last"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_simulated_weighted_losses(sim, dtype, features_last):
    check_weighted_losses(sim.module, np.asarray, dtype, features_last)


def test_simulated_features_last_with_leading_dimensions(sim):
    configs = _configs(13)
    gpu_comp = SymbolicJITCompiler(configs, "GPU_CUDA", dtype="float64", strict=True)
    cpu_comp = SymbolicJITCompiler(configs, "CPU_PYTHON", dtype="float64")
    z, g = _inputs(13, 6, "float64")
    z3, g3 = np.ascontiguousarray(z.T).reshape(2, 3, 13), np.ascontiguousarray(g.T).reshape(2, 3, 13)
    got = gpu_comp.forward_kernel(sim.module.asarray(z3), features_last=True)
    assert got.shape == (2, 3, 13)
    _close(got, cpu_comp.forward_kernel(z3, features_last=True), "float64", "forward (2, 3, 13)")
    _close(gpu_comp.backward_kernel(sim.module.asarray(z3), sim.module.asarray(g3), features_last=True),
           cpu_comp.backward_kernel(z3, g3, features_last=True), "float64", "backward (2, 3, 13)")


def test_simulated_launches_and_scratch(sim):
    """Arguments, scratch size and launch order of a constants' gradient call."""
    from heterosymnn.codegen.cuda_tiles import TILE_STEPS

    configs = _configs(40)  # 13 structures of 3 or 4 nodes each
    gpu_comp = SymbolicJITCompiler(configs, "GPU_CUDA", dtype="float32", strict=True)
    n_constants = len(gpu_comp.constant_names)
    z, g = _inputs(40, 2500, "float32")
    # Nodes first: a node per warp, 32 lanes on its row; last: 4 lanes per node, 8 samples a step.
    for features_last, samples_per_chunk in ((False, TILE_STEPS * 32), (True, TILE_STEPS * 8)):
        arrays = [sim.module.asarray(_layout(features_last)(v)) for v in (z, g)]
        sim.launched.clear(), sim.allocated.clear()
        cg = sim.module.asarray(np.full(n_constants, np.nan))
        gpu_comp.backward_kernel(*arrays, constants_grad=cg, features_last=features_last)
        names = [name for name, *_ in sim.launched]
        assert names == ["hs_backward_grad_f32", "hs_constants_sum_f32"]
        n_chunks = -(-2500 // samples_per_chunk)
        scratch = [shape for shape, dtype in sim.allocated if dtype == np.float64]
        assert scratch == [(n_constants * n_chunks,)], sim.allocated
        args = sim.launched[0][3]
        assert [int(v) for v in args[5:9]] == ([1, 40, 2500, n_chunks] if features_last else [2500, 1, 2500, n_chunks])
        assert args[13] is not None and args[14].shape == (n_constants * n_chunks,)
        assert sim.launched[1][3][-1] is cg and sim.launched[1][3][-2] is args[14]


def test_simulated_layers_without_constants_take_the_plain_kernels(sim):
    gpu_comp = SymbolicJITCompiler(["relu", "tanh", "sin"], "GPU_CUDA", dtype="float64", strict=True)
    z, g = _inputs(3, 40, "float64")
    cg = sim.module.asarray(np.zeros(0))
    sim.launched.clear()
    out = gpu_comp.backward_kernel(sim.module.asarray(z), sim.module.asarray(g), constants_grad=cg)
    assert [name for name, *_ in sim.launched] == ["hs_backward_rows_f64"]
    gpu_comp.backward_kernel(sim.module.asarray(np.ascontiguousarray(z.T)), sim.module.asarray(
        np.ascontiguousarray(g.T)), constants_grad=cg, features_last=True)
    assert [name for name, *_ in sim.launched][1:] == ["hs_backward_tiles_f64"]
    np.testing.assert_array_equal(np.asarray(out), np.asarray(gpu_comp.backward_kernel(
        sim.module.asarray(z), sim.module.asarray(g))))


def test_simulated_entries_of_zero_derivatives_are_written_and_slotless_nodes_have_none(sim):
    configs = ["tanh", ("Piecewise((num, num > c), (0, True))", {"c": 0.1}), "relu", ("a*num", {"a": 2.0})]
    gpu_comp = SymbolicJITCompiler(configs, "GPU_CUDA", dtype="float64", strict=True)
    assert gpu_comp.constant_names == [(1, "c"), (3, "a")]
    z, g = _inputs(4, 50, "float64")
    cg = sim.module.asarray(np.full(2, np.nan))
    gpu_comp.backward_kernel(sim.module.asarray(z), sim.module.asarray(g), constants_grad=cg)
    assert np.asarray(cg)[0] == 0.0  # a constant in a condition: a step, derivative 0
    np.testing.assert_allclose(np.asarray(cg)[1], np.sum(g[3] * z[3]), rtol=1e-13)


def test_simulated_in_place_gradient_reads_grad_before_writing_it(sim):
    """``out=grad``: each element's grad is read for the constants' terms before out overwrites it."""
    gpu_comp = SymbolicJITCompiler(_configs(13), "GPU_CUDA", dtype="float64", strict=True)
    z, g = _inputs(13, 40, "float64")
    want = sim.module.asarray(np.full(len(gpu_comp.constant_names), np.nan))
    expected = gpu_comp.backward_kernel(sim.module.asarray(z), sim.module.asarray(g), constants_grad=want)
    for features_last in (False, True):
        layout = _layout(features_last)
        grad = sim.module.asarray(layout(g))
        cg = sim.module.asarray(np.full(len(gpu_comp.constant_names), np.nan))
        out = gpu_comp.backward_kernel(sim.module.asarray(layout(z)), grad, out=grad, constants_grad=cg,
                                       features_last=features_last)
        assert out is grad
        np.testing.assert_array_equal(layout(np.asarray(expected)), np.asarray(out))
        if features_last:  # another grouping: the same sums up to their order
            _check_constants_grad(np.asarray(cg), np.asarray(want), _term_scale(_configs(13), "activation", z, g),
                                  40, "float64", "in place, features last")
        else:
            np.testing.assert_array_equal(np.asarray(cg), np.asarray(want))


def test_simulated_results_do_not_depend_on_the_grid(sim):
    z, g = _inputs(13, 40_000, "float32")  # 13 x 40 tiles of a warp: 65 blocks of 8 warps
    results = []
    for sm_count in (1, 2, 64):
        sim.sm_count = sm_count
        gpu_comp = SymbolicJITCompiler(_configs(13), "GPU_CUDA", dtype="float32", strict=True)
        cg = sim.module.asarray(np.full(len(gpu_comp.constant_names), np.nan))
        sim.launched.clear()
        gpu_comp.backward_kernel(sim.module.asarray(z), sim.module.asarray(g), constants_grad=cg)
        results.append((sim.launched[0][1], np.asarray(cg).copy()))
    assert len({grid for grid, _ in results}) == 3  # three different grids ...
    for _, cg in results[1:]:
        np.testing.assert_array_equal(cg, results[0][1])  # ... the same bits


def test_simulated_constants_grad_on_another_device_is_an_error(sim):
    gpu_comp = SymbolicJITCompiler(_configs(2), "GPU_CUDA", dtype="float64", strict=True)
    z, g = _inputs(2, 8, "float64")
    with sim.module.cuda.Device(1):
        cg = sim.module.asarray(np.zeros(len(gpu_comp.constant_names)))
    with pytest.raises(ValueError, match="device 1, but this compiler runs on device 0"):
        gpu_comp.backward_kernel(sim.module.asarray(z), sim.module.asarray(g), constants_grad=cg)


def test_simulated_a_structure_without_constants_gradient_still_runs(sim, monkeypatch):
    from heterosymnn.symbolic.structure import Structure

    derive = Structure.__dict__["constant_derivatives"].func

    def refuse(self):
        if "sin" in str(self.expr):
            raise FormulaParsingError("the derivative of p0*sin(num) with respect to one of its constants: no")
        return derive(self)

    monkeypatch.setattr(Structure, "constant_derivatives", property(refuse))
    configs = [("a*tanh(num)", {"a": 2.0}), ("b*sin(num)", {"b": 3.0})]
    gpu_comp = SymbolicJITCompiler(configs, "GPU_CUDA", dtype="float64", strict=True)
    cpu_comp = SymbolicJITCompiler(configs, "CPU_PYTHON", dtype="float64")
    z, g = _inputs(2, 8, "float64")
    _close(gpu_comp.backward_kernel(sim.module.asarray(z), sim.module.asarray(g)),
           cpu_comp.backward_kernel(z, g), "float64", "backward")
    with pytest.raises(FormulaParsingError, match="constants' gradient cannot be computed: node 1: .*sin"):
        gpu_comp.backward_kernel(sim.module.asarray(z), sim.module.asarray(g),
                                 constants_grad=sim.module.asarray(np.zeros(2)))


# -- on a real GPU ------------------------------------------------------------------------------
@gpu
@needs_gpu
@pytest.mark.parametrize("features_last", [False, True], ids=["nodes_first", "features_last"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_nodes, batch", SHAPES + [(4, 100_000), (1024, 3), (64, 4096), (1, 70_000)])
def test_gpu_constants_grad_matches_cpu_python(cp, n_nodes, batch, dtype, features_last):
    check_activation(cp, cp.asnumpy, n_nodes, batch, dtype, features_last)


@gpu
@needs_gpu
@pytest.mark.parametrize("features_last", [False, True], ids=["nodes_first", "features_last"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_gpu_losses_constants_grad(cp, dtype, features_last):
    check_losses(cp, cp.asnumpy, dtype, features_last)


@gpu
@needs_gpu
@pytest.mark.parametrize("features_last", [False, True], ids=["nodes_first", "features_last"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_gpu_weighted_losses(cp, dtype, features_last):
    check_weighted_losses(cp, cp.asnumpy, dtype, features_last)


@gpu
@needs_gpu
def test_gpu_constants_grad_is_the_same_on_another_stream(cp):
    configs = _configs(13)
    gpu_comp = SymbolicJITCompiler(configs, "GPU_CUDA", dtype="float32", strict=True)
    z, g = (cp.asarray(v) for v in _inputs(13, 50_000, "float32"))
    first = cp.full(len(gpu_comp.constant_names), cp.nan)
    gpu_comp.backward_kernel(z, g, constants_grad=first)
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        second = cp.full(len(gpu_comp.constant_names), cp.nan)
        gpu_comp.backward_kernel(z, g, constants_grad=second)
    stream.synchronize()
    np.testing.assert_array_equal(cp.asnumpy(first), cp.asnumpy(second))
