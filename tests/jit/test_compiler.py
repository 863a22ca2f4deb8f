"""The SymbolicJITCompiler contract (DESIGN §3) on the CPU_PYTHON backend."""
from __future__ import annotations

import inspect
import multiprocessing
import operator
import pickle
import sys
import types
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

import heterosymnn
from heterosymnn import (
    BackendUnavailableError, CacheError, CompilationWarning, FormulaParsingError, HeteroSymNNError,
    InvalidDeviceIDError, JITCompilationError, PerformanceWarning, SymbolicJITCompiler, ToolchainNotFoundError,
    config,
)
from heterosymnn.jit import selection

CONFIGS = ["relu", ("a*sin(w*num)", {"a": 2.0, "w": 3.0}), "tanh"]


def expected_forward(z):
    z = np.asarray(z, np.float64)
    return np.stack([np.maximum(z[0], 0), 2 * np.sin(3 * z[1]), np.tanh(z[2])])


def expected_derivative(z):
    z = np.asarray(z, np.float64)
    return np.stack([np.heaviside(z[0], 0.0), 6 * np.cos(3 * z[1]), 1 - np.tanh(z[2]) ** 2])


@pytest.fixture
def comp():
    return SymbolicJITCompiler(CONFIGS, "CPU_PYTHON", dtype="float64")


@pytest.fixture
def comp32():
    return SymbolicJITCompiler(CONFIGS, "CPU_PYTHON")


def batch(n_rows=3, cols=5, dtype=np.float64, seed=0):
    return np.random.default_rng(seed).normal(size=(n_rows, cols)).astype(dtype)


# -- constructor -------------------------------------------------------------------------------
def test_constructor_signature_is_seed_compatible():
    parameters = list(inspect.signature(SymbolicJITCompiler).parameters.values())
    assert [p.name for p in parameters] == ["configs", "calculation_method", "device_id", "mode", "dtype", "strict"]
    kinds = [p.kind for p in parameters]
    assert kinds[:4] == [inspect.Parameter.POSITIONAL_OR_KEYWORD] * 4
    assert kinds[4:] == [inspect.Parameter.KEYWORD_ONLY] * 2
    defaults = {p.name: p.default for p in parameters}
    assert defaults["calculation_method"] == "AUTO"
    assert defaults["device_id"] == 0
    assert defaults["mode"] == "activation"
    assert defaults["dtype"] == "float32"
    assert defaults["strict"] is False


def test_positional_arguments_in_seed_order():
    loss = SymbolicJITCompiler(["mse"], "CPU_PYTHON", 0, "loss")
    assert loss.mode == "loss" and loss.device_id == 0
    np.testing.assert_allclose(loss.forward_kernel(np.array([3.0], np.float32), np.array([1.0], np.float32)), [4.0])
    with pytest.raises(TypeError):
        SymbolicJITCompiler(["mse"], "CPU_PYTHON", 0, "loss", "float64")  # dtype is keyword-only


def test_defaults(comp32):
    assert comp32.device_id == 0
    assert comp32.mode == "activation"
    assert comp32.dtype == np.float32
    assert comp32.calculation_method == "CPU_PYTHON"
    assert comp32.forward_kernel(batch(dtype=np.float32)).dtype == np.float32


@pytest.mark.parametrize("method", ["TPU", "", "CPU", None, 3])
def test_invalid_calculation_method(method):
    with pytest.raises(ValueError, match="calculation_method"):
        SymbolicJITCompiler(["relu"], method)


@pytest.mark.parametrize("mode", ["activations", "Loss ", "", None])
def test_invalid_mode(mode):
    with pytest.raises(ValueError, match="mode"):
        SymbolicJITCompiler(["relu"], "CPU_PYTHON", 0, mode)


@pytest.mark.parametrize("dtype", ["float16", "int32", "complex128", "double precision", object])
def test_invalid_dtype(dtype):
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64'"):
        SymbolicJITCompiler(["relu"], "CPU_PYTHON", dtype=dtype)


def test_numpy_dtype_objects_are_accepted():
    assert SymbolicJITCompiler(["relu"], "CPU_PYTHON", dtype=np.float64).dtype == np.float64
    assert SymbolicJITCompiler(["relu"], "CPU_PYTHON", dtype=np.dtype("float32")).dtype == np.float32


@pytest.mark.parametrize("device_id", [-1, "a", 1.5, True, None])
def test_invalid_device_id(device_id, comp):
    with pytest.raises(InvalidDeviceIDError):
        SymbolicJITCompiler(["relu"], "CPU_PYTHON", device_id)
    with pytest.raises(InvalidDeviceIDError):
        comp.set_gpu_id(device_id)
    assert comp.device_id == 0


def test_set_gpu_id_on_the_cpu_keeps_working(comp):
    z = batch()
    before = comp.forward_kernel(z)
    comp.set_gpu_id(1)
    assert comp.device_id == 1
    np.testing.assert_array_equal(comp.forward_kernel(z), before)


def test_repr_names_the_layer(comp):
    text = repr(comp)
    assert "3 nodes" in text and "CPU_PYTHON" in text and "float64" in text


# -- activation kernels ------------------------------------------------------------------------
def test_forward_and_backward_2d(comp):
    z, grad = batch(), batch(seed=1)
    np.testing.assert_allclose(comp.forward_kernel(z), expected_forward(z), rtol=1e-14)
    np.testing.assert_allclose(comp.backward_kernel(z, grad), grad * expected_derivative(z), rtol=1e-14)


def test_forward_and_backward_1d(comp):
    z, grad = np.array([-0.5, 0.3, 2.0]), np.array([1.0, -2.0, 0.5])
    out = comp.forward_kernel(z)
    assert out.shape == (3,)
    np.testing.assert_allclose(out, expected_forward(z[:, None])[:, 0], rtol=1e-14)
    back = comp.backward_kernel(z, grad)
    assert back.shape == (3,)
    np.testing.assert_allclose(back, grad * expected_derivative(z[:, None])[:, 0], rtol=1e-14)


def test_float32(comp32):
    z = batch(dtype=np.float32)
    out = comp32.forward_kernel(z)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected_forward(z), rtol=1e-6, atol=1e-6)


def test_out_is_written_and_returned(comp):
    z, grad = batch(), batch(seed=1)
    out = np.full_like(z, 7.0)
    assert comp.forward_kernel(z, out) is out
    np.testing.assert_allclose(out, expected_forward(z), rtol=1e-14)
    out2 = np.empty_like(z)
    assert comp.backward_kernel(z, grad, out=out2) is out2
    np.testing.assert_allclose(out2, grad * expected_derivative(z), rtol=1e-14)
    out1 = np.empty(3)
    assert comp.forward_kernel(z[:, 0].copy(), out=out1) is out1


def test_out_of_wrong_dtype(comp):
    with pytest.raises(TypeError, match="float64"):
        comp.forward_kernel(batch(), out=np.empty((3, 5), np.float32))


@pytest.mark.parametrize("shape", [(3, 4), (5, 3), (15,), (3, 5, 1), (1, 3, 5)])
def test_out_of_wrong_shape(comp, shape):
    with pytest.raises(ValueError, match=r"\(3, 5\)"):
        comp.forward_kernel(batch(), out=np.empty(shape))


def test_out_non_contiguous(comp):
    with pytest.raises(ValueError, match="C-contiguous"):
        comp.forward_kernel(batch(), out=np.empty((5, 3)).T)
    with pytest.raises(ValueError, match="C-contiguous"):
        comp.forward_kernel(batch(), out=np.empty((3, 10))[:, ::2])


@pytest.mark.parametrize("out", [[0.0] * 3, (1, 2, 3), "out"])
def test_out_not_an_array(comp, out):
    with pytest.raises(TypeError, match="ndarray"):
        comp.forward_kernel(np.zeros(3), out=out)


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.complex128, bool])
def test_input_of_wrong_dtype(comp, dtype):
    with pytest.raises(TypeError, match="float64"):
        comp.forward_kernel(np.zeros((3, 2), dtype))
    with pytest.raises(TypeError, match="float64"):
        comp.backward_kernel(np.zeros((3, 2)), np.zeros((3, 2), dtype))


@pytest.mark.parametrize("shape", [(2, 5), (4, 5), (2,), (4,), (0, 5)])
def test_input_with_wrong_number_of_rows(comp, shape):
    with pytest.raises(ValueError, match=r"3 nodes|\(3,\)"):
        comp.forward_kernel(np.zeros(shape))
    with pytest.raises(ValueError, match=r"3 nodes|\(3,\)"):
        comp.backward_kernel(np.zeros(shape), np.zeros(shape))


def test_input_with_three_dimensions(comp):
    with pytest.raises(ValueError, match=r"\(3,\) or \(3, batch\)"):
        comp.forward_kernel(np.zeros((3, 2, 2)))
    with pytest.raises(ValueError):
        comp.forward_kernel(np.zeros(()))


@pytest.mark.parametrize("value", [[0.0, 1.0, 2.0], (0.0, 1.0, 2.0), 1.0, "z", None])
def test_input_not_an_array(comp, value):
    with pytest.raises(TypeError, match="ndarray"):
        comp.forward_kernel(value)
    with pytest.raises(TypeError, match="ndarray"):
        comp.backward_kernel(np.zeros(3), value)


def test_grad_of_another_shape(comp):
    with pytest.raises(ValueError, match=r"grad has shape \(3, 4\).*\(3, 5\)"):
        comp.backward_kernel(batch(), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="shape"):
        comp.backward_kernel(np.zeros(3), np.zeros((3, 1)))


@pytest.mark.parametrize("view", ["transposed", "strided", "reversed", "fortran"])
def test_non_contiguous_inputs_give_correct_results(comp, view):
    base = np.random.default_rng(2).normal(size=(6, 10))
    if view == "transposed":
        z, grad = base[:5, :3].T, base[:5, 3:6].T  # (3, 5) views with strides the other way
    elif view == "strided":
        z, grad = base[:3, ::2], base[3:, 1::2]
    elif view == "reversed":
        z, grad = base[2::-1, ::-2], base[:2:-1, ::-2]
    else:
        z, grad = np.asfortranarray(base[:3, :5]), np.asfortranarray(base[3:, :5])
    assert not z.flags.c_contiguous
    z_copy, grad_copy = np.ascontiguousarray(z), np.ascontiguousarray(grad)
    np.testing.assert_allclose(comp.forward_kernel(z), expected_forward(z_copy), rtol=1e-14)
    np.testing.assert_allclose(comp.backward_kernel(z, grad), grad_copy * expected_derivative(z_copy), rtol=1e-14)
    np.testing.assert_array_equal(z, z_copy)  # inputs untouched


def test_in_place_out_is_the_input(comp):
    z = batch()
    expected = expected_forward(z)
    assert comp.forward_kernel(z, out=z) is z
    np.testing.assert_allclose(z, expected, rtol=1e-14)
    z, grad = batch(), batch(seed=1)
    expected = grad * expected_derivative(z)
    assert comp.backward_kernel(z, grad, out=grad) is grad
    np.testing.assert_allclose(grad, expected, rtol=1e-14)
    z, grad = batch(), batch(seed=1)
    expected = grad * expected_derivative(z)
    assert comp.backward_kernel(z, grad, out=z) is z
    np.testing.assert_allclose(z, expected, rtol=1e-14)


def test_out_overlapping_the_input_with_a_shift(comp):
    buffer = np.random.default_rng(3).normal(size=16)
    z = buffer[1:].reshape(3, 5)
    out = buffer[:-1].reshape(3, 5)
    expected = expected_forward(z.copy())
    assert comp.forward_kernel(z, out=out) is out
    np.testing.assert_allclose(out, expected, rtol=1e-14)


def test_empty_batch(comp):
    empty = np.empty((3, 0))
    assert comp.forward_kernel(empty).shape == (3, 0)
    assert comp.backward_kernel(empty, empty).shape == (3, 0)
    out = np.empty((3, 0))
    assert comp.forward_kernel(empty, out=out) is out


# -- loss mode ---------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(), (1,), (7,), (4, 5), (2, 3, 4), (3, 0)])
def test_single_loss_works_on_any_shape(shape):
    comp = SymbolicJITCompiler([("c*(y_pred - y_true)**2", {"c": 0.5})], "CPU_PYTHON", mode="loss", dtype="float64")
    rng = np.random.default_rng(4)
    p, t = rng.normal(size=shape), rng.normal(size=shape)
    value, grad = comp.forward_kernel(p, t), comp.backward_kernel(p, t)
    assert value.shape == shape and grad.shape == shape
    np.testing.assert_allclose(value, 0.5 * (p - t) ** 2, rtol=1e-14)
    np.testing.assert_allclose(grad, p - t, rtol=1e-14)  # element-wise, not averaged
    out = np.empty(shape)
    assert comp.forward_kernel(p, t, out=out) is out
    np.testing.assert_allclose(out, 0.5 * (p - t) ** 2, rtol=1e-14)


def test_single_loss_non_contiguous_and_checks():
    comp = SymbolicJITCompiler(["mae"], "CPU_PYTHON", mode="loss", dtype="float64")
    base = np.random.default_rng(5).normal(size=(4, 6))
    p, t = base[:, ::2], base.T[::2, :4].T
    np.testing.assert_allclose(comp.forward_kernel(p, t), np.abs(p - t), rtol=1e-15)
    with pytest.raises(ValueError, match="shape"):
        comp.forward_kernel(np.zeros(3), np.zeros(4))
    with pytest.raises(TypeError, match="float64"):
        comp.backward_kernel(np.zeros(3), np.zeros(3, np.float32))
    with pytest.raises(TypeError, match="ndarray"):
        comp.forward_kernel([1.0], np.zeros(1))
    with pytest.raises(ValueError, match=r"\(4,\)"):
        comp.forward_kernel(np.zeros(4), np.zeros(4), out=np.zeros(5))


def test_several_losses_one_per_output_row():
    comp = SymbolicJITCompiler(["mse", "mae", ("huber", {"delta": 0.5})], "CPU_PYTHON", mode="loss", dtype="float64")
    rng = np.random.default_rng(6)
    p, t = rng.normal(size=(3, 8)), rng.normal(size=(3, 8))
    d = p - t
    expected = [d[0] ** 2, np.abs(d[1]), np.where(np.abs(d[2]) <= 0.5, d[2] ** 2 / 2, 0.5 * (np.abs(d[2]) - 0.25))]
    np.testing.assert_allclose(comp.forward_kernel(p, t), expected, rtol=1e-14)
    grads = [2 * d[0], np.sign(d[1]), np.where(np.abs(d[2]) <= 0.5, d[2], 0.5 * np.sign(d[2]))]
    np.testing.assert_allclose(comp.backward_kernel(p, t), grads, rtol=1e-14)
    np.testing.assert_allclose(comp.forward_kernel(p[:, 0].copy(), t[:, 0].copy()), np.array(expected)[:, 0])
    with pytest.raises(ValueError, match="3 nodes"):
        comp.forward_kernel(np.zeros((2, 8)), np.zeros((2, 8)))
    with pytest.raises(ValueError, match="dimensions"):
        comp.forward_kernel(np.zeros((3, 2, 2)), np.zeros((3, 2, 2)))


# -- constants -----------------------------------------------------------------------------------
def test_constants_reads_every_node(comp):
    assert comp.constants == [{}, {"a": 2.0, "w": 3.0}, {}]
    copy = comp.constants
    copy[1]["a"] = 99.0
    assert comp.constants[1]["a"] == 2.0


def test_set_constants_changes_results_without_rebuilding(comp, monkeypatch):
    import sympy

    def forbidden(*args, **kwargs):
        raise AssertionError("set_constants must not parse, differentiate or generate code")

    kernels = comp._kernels
    monkeypatch.setattr(sympy, "lambdify", forbidden)
    monkeypatch.setattr(sympy, "diff", forbidden)
    monkeypatch.setattr("heterosymnn.symbolic.layer.analyze", forbidden)
    z = batch()
    comp.set_constants(1, a=-1.0, w=0.5)
    assert comp._kernels is kernels
    assert comp.constants[1] == {"a": -1.0, "w": 0.5}
    np.testing.assert_allclose(comp.forward_kernel(z)[1], -np.sin(0.5 * z[1]), rtol=1e-14)
    np.testing.assert_allclose(comp.backward_kernel(z, np.ones_like(z))[1], -0.5 * np.cos(0.5 * z[1]), rtol=1e-14)
    comp.set_constants(1, a=3)  # one at a time, ints accepted
    np.testing.assert_allclose(comp.forward_kernel(z)[1], 3 * np.sin(0.5 * z[1]), rtol=1e-14)
    np.testing.assert_allclose(comp.forward_kernel(z)[[0, 2]], expected_forward(z)[[0, 2]], rtol=1e-14)


def test_nodes_sharing_a_structure_keep_their_own_constants():
    comp = SymbolicJITCompiler([("a*num", {"a": 1.0})] * 4, "CPU_PYTHON", dtype="float64")
    assert comp.n_structures == 1
    comp.set_constants(2, a=5.0)
    np.testing.assert_array_equal(comp.forward_kernel(np.ones(4)), [1.0, 1.0, 5.0, 1.0])


def test_set_constants_rejects_unknown_names(comp):
    with pytest.raises(KeyError, match=r"node 1 has no constant 'b'.*a, w"):
        comp.set_constants(1, b=1.0)
    with pytest.raises(KeyError, match="none"):
        comp.set_constants(0, a=1.0)
    assert comp.constants[1] == {"a": 2.0, "w": 3.0}


def test_set_constants_unknown_name_changes_nothing(comp):
    with pytest.raises(KeyError):
        comp.set_constants(1, a=5.0, nope=1.0)
    assert comp.constants[1] == {"a": 2.0, "w": 3.0}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), "1", None, True, 1j])
def test_set_constants_rejects_non_finite_or_non_real(comp, value):
    with pytest.raises(ValueError, match="'a' must be a finite real number"):
        comp.set_constants(1, a=value)
    assert comp.constants[1] == {"a": 2.0, "w": 3.0}


@pytest.mark.parametrize("node", [3, -1, 1.0, "1", True])
def test_set_constants_rejects_a_bad_node(comp, node):
    with pytest.raises(IndexError):
        comp.set_constants(node, a=1.0)


# -- backend selection and fallback ---------------------------------------------------------------
UNAVAILABLE_REASON = "simulated: no C compiler found; install gcc or run pip install ziglang"


@pytest.fixture
def only_numpy(monkeypatch):
    """GPU_CUDA and CPU_JIT cannot be built, whatever this machine has."""
    broken = types.ModuleType("heterosymnn_test_broken_backend")

    def build(**kwargs):
        raise BackendUnavailableError(UNAVAILABLE_REASON)

    broken.build = build
    monkeypatch.setitem(sys.modules, broken.__name__, broken)
    monkeypatch.setattr(selection, "BUILDERS", {
        "CPU_PYTHON": "heterosymnn.backends.python:build",
        "CPU_JIT": f"{broken.__name__}:build",
        "GPU_CUDA": f"{broken.__name__}:build",
    })


def _performance_warnings(record):
    return [str(w.message) for w in record if issubclass(w.category, PerformanceWarning)]


def test_explicit_cpu_python_never_warns(only_numpy):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert SymbolicJITCompiler(["relu"], "CPU_PYTHON").calculation_method == "CPU_PYTHON"


@pytest.mark.parametrize("method", ["GPU_CUDA", "CPU_JIT"])
def test_unavailable_backend_falls_back_with_a_warning_saying_why(only_numpy, method):
    with pytest.warns(PerformanceWarning) as record:
        comp = SymbolicJITCompiler(CONFIGS, method, dtype="float64")
    assert comp.calculation_method == "CPU_PYTHON"
    messages = _performance_warnings(record)
    assert any(method in m and UNAVAILABLE_REASON in m for m in messages), messages
    z = batch()
    np.testing.assert_allclose(comp.forward_kernel(z), expected_forward(z), rtol=1e-14)


def test_gpu_falls_back_through_cpu_jit(only_numpy):
    with pytest.warns(PerformanceWarning) as record:
        comp = SymbolicJITCompiler(["relu"], "GPU_CUDA")
    messages = _performance_warnings(record)
    assert any(m.startswith("GPU_CUDA") for m in messages), messages
    assert any(m.startswith("CPU_JIT") and "CPU_PYTHON" in m for m in messages), messages
    assert comp.calculation_method == "CPU_PYTHON"


def test_array_module_is_the_array_library_of_the_backend_in_use(only_numpy):
    with pytest.warns(PerformanceWarning):
        comp = SymbolicJITCompiler(CONFIGS, "GPU_CUDA", dtype="float64")
    assert comp.array_module is np  # the fallback's library, not the requested backend's
    z = comp.array_module.asarray(batch().tolist(), dtype=comp.dtype)
    out = comp.forward_kernel(z)
    assert type(out) is comp.array_module.ndarray
    np.testing.assert_allclose(out, expected_forward(z), rtol=1e-14)
    assert "cupy" in type(comp).array_module.__doc__  # documented public API


def test_auto_picks_what_works(only_numpy):
    with pytest.warns(PerformanceWarning, match="CPU_JIT") as record:
        comp = SymbolicJITCompiler(["relu"], "AUTO")
    assert comp.calculation_method == "CPU_PYTHON"
    assert not any(m.startswith("GPU_CUDA") for m in _performance_warnings(record))  # no GPU is not news


def test_auto_without_a_gpu_does_not_warn(only_numpy, monkeypatch):
    monkeypatch.setitem(selection.BUILDERS, "CPU_JIT", "heterosymnn.backends.python:build")
    with warnings.catch_warnings():
        warnings.simplefilter("error", PerformanceWarning)
        comp = SymbolicJITCompiler(["relu"])
    assert comp.calculation_method == "CPU_PYTHON"


@pytest.mark.parametrize("method", ["GPU_CUDA", "CPU_JIT"])
def test_strict_raises_instead_of_falling_back(only_numpy, method):
    with pytest.raises(BackendUnavailableError, match=UNAVAILABLE_REASON):
        SymbolicJITCompiler(["relu"], method, strict=True)
    with config.override(strict=True):
        with pytest.raises(BackendUnavailableError, match=UNAVAILABLE_REASON):
            SymbolicJITCompiler(["relu"], method)


def test_strict_from_the_environment(only_numpy, monkeypatch):
    monkeypatch.setenv("HETEROSYMNN_STRICT", "1")
    with pytest.raises(BackendUnavailableError):
        SymbolicJITCompiler(["relu"], "CPU_JIT")
    assert SymbolicJITCompiler(["relu"], "CPU_PYTHON").calculation_method == "CPU_PYTHON"


def test_gpu_cuda_without_cupy_falls_back(monkeypatch):
    """The real GPU builder, on a machine (or a test) without CuPy: never a crash."""
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy fails
    monkeypatch.setitem(selection.BUILDERS, "CPU_JIT", "heterosymnn.backends.python:build")
    with pytest.warns(PerformanceWarning, match="GPU_CUDA"):
        comp = SymbolicJITCompiler(["relu"], "GPU_CUDA")
    assert comp.calculation_method == "CPU_PYTHON"
    with pytest.raises(BackendUnavailableError):
        SymbolicJITCompiler(["relu"], "GPU_CUDA", strict=True)


def test_formula_errors_are_not_backend_errors(only_numpy):
    with pytest.raises(FormulaParsingError):
        SymbolicJITCompiler(["factorial(num)"], "GPU_CUDA")


# -- pickling and worker processes ----------------------------------------------------------------
def test_pickle_round_trip_keeps_configs_options_and_constants(comp):
    comp.set_constants(1, a=-4.0)
    clone = pickle.loads(pickle.dumps(comp))
    assert clone is not comp
    assert clone.constants == comp.constants == [{}, {"a": -4.0, "w": 3.0}, {}]
    assert clone.dtype == comp.dtype and clone.mode == comp.mode
    assert clone.calculation_method == "CPU_PYTHON" and clone.device_id == comp.device_id
    z = batch()
    np.testing.assert_array_equal(clone.forward_kernel(z), comp.forward_kernel(z))
    np.testing.assert_array_equal(clone.backward_kernel(z, z), comp.backward_kernel(z, z))
    clone.set_constants(1, a=1.0)  # independent copies
    assert comp.constants[1]["a"] == -4.0


def test_pickle_loss_mode():
    comp = SymbolicJITCompiler([("huber", {"delta": 0.25})], "CPU_PYTHON", mode="loss")
    clone = pickle.loads(pickle.dumps(comp, protocol=pickle.HIGHEST_PROTOCOL))
    p, t = np.linspace(-1, 1, 9, dtype=np.float32), np.zeros(9, np.float32)
    assert clone.mode == "loss" and clone.dtype == np.float32
    np.testing.assert_array_equal(clone.forward_kernel(p, t), comp.forward_kernel(p, t))


def test_works_in_spawned_worker_processes(comp, monkeypatch, fresh_cache_dir):
    monkeypatch.setenv("HETEROSYMNN_CACHE_DIR", str(fresh_cache_dir))  # children never touch the real cache
    comp.set_constants(1, w=5.0)
    inputs = [batch(seed=s) for s in range(4)]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
        results = list(pool.map(operator.methodcaller("forward_kernel", inputs[0]), [comp] * 2))
        grads = [pool.submit(operator.methodcaller("backward_kernel", z, z), comp) for z in inputs]
        grads = [f.result(timeout=120) for f in grads]
        constants = pool.submit(operator.attrgetter("constants"), comp).result(timeout=120)
    for result in results:
        np.testing.assert_array_equal(result, comp.forward_kernel(inputs[0]))
    for z, grad in zip(inputs, grads):
        np.testing.assert_array_equal(grad, comp.backward_kernel(z, z))
    assert constants == comp.constants


# -- public names -----------------------------------------------------------------------------------
def test_every_public_name_is_importable_from_the_package():
    for name in ["SymbolicJITCompiler", "render_source", "HeteroSymNNError", "FormulaParsingError",
                 "JITCompilationError", "InvalidDeviceIDError", "BackendUnavailableError", "ToolchainNotFoundError",
                 "CacheError", "PerformanceWarning", "CompilationWarning"]:
        assert hasattr(heterosymnn, name), name
        assert name in heterosymnn.__all__
    assert heterosymnn.jit.SymbolicJITCompiler is SymbolicJITCompiler
    assert callable(heterosymnn.render_source)


def test_errors_derive_from_one_root_and_warnings_are_warnings():
    for error in (FormulaParsingError, JITCompilationError, InvalidDeviceIDError, BackendUnavailableError,
                  ToolchainNotFoundError, CacheError):
        assert issubclass(error, HeteroSymNNError), error
        assert issubclass(error, Exception)
    assert issubclass(HeteroSymNNError, Exception)
    for warning in (PerformanceWarning, CompilationWarning):
        assert issubclass(warning, Warning)
        assert not issubclass(warning, HeteroSymNNError)


def test_render_source_python_target():
    text = heterosymnn.render_source(["relu", ("a*sin(num)", {"a": 2.0})], target="python")
    assert "maximum" in text and "sin" in text
