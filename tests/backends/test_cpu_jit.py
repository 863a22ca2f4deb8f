"""CPU_JIT against CPU_PYTHON: the whole formula corpus, float32 and float64, forward and backward,
special values, and the shapes that take different paths through the C driver.

One CPU_JIT compiler holds the whole activation corpus as its nodes (one row per formula) and one
holds every loss, per dtype, all built once for this module into its own cache directory: the
comparison runs the same generated functions the users get, with few compiler runs.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest

from corpus import ACTIVATIONS, LOSSES
from heterosymnn import SymbolicJITCompiler, ToolchainNotFoundError, cache, config
from heterosymnn.backends.cpu_modules import FUNCTIONS_PER_BUILD, compiler_runs, usable_cores
from heterosymnn.toolchains import find_toolchain

try:  # these tests build with the real compiler; without any, CPU_JIT cannot be tested here
    find_toolchain()
except ToolchainNotFoundError as _exc:
    pytest.skip(f"no usable C toolchain for CPU_JIT: {_exc}", allow_module_level=True)

DTYPES = ("float32", "float64")
ACT_CONFIGS = [c for c, _, _ in ACTIVATIONS]
LOSS_CONFIGS = [c for c, _, _ in LOSSES]

# Two implementations of the same expression: CPU_PYTHON (NumPy ufuncs, SciPy's erf) and the
# generated C (libm, or glibc's libmvec vector variants, which are accurate to a few ulp).
# float64: 1e-12 relative leaves ~4500 ulp for the worst libm-vs-NumPy difference after a few
# operations; float32: 1e-5 is ~80 ulp. The absolute tolerance is relative to the row's own
# scale (its largest finite |value| on moderate inputs, at least 1): near a zero crossing of
# a sum (``num**3 - 2*num`` at sqrt(2), ``1.5*sin(30*num) - 0.25``) the rounding error is a
# fraction of the size of the terms, not of the tiny result.
RTOL = {"float64": 1e-12, "float32": 1e-5}
ATOL = {"float64": 1e-13, "float32": 1e-6}

_KINKS = [0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 1e-7, 1 - 1e-7, 2.0, -2.0]
MODERATE = np.concatenate([np.linspace(-4, 4, 161), _KINKS, [1e-300, -1e-300, 1e-5, -1e-5, 0.999, 1.001]])
SPECIAL = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1.0, -2.5])
LARGE = {"float64": np.array([1e300, -1e300, 800.0, -800.0, 1e10, -1e10, 40.0, -40.0, 1e5, -3e4]),
         "float32": np.array([1e30, -1e30, 1e10, -1e10, 100.0, -100.0, 40.0, -40.0, 1e5, -3e4])}
GRADS = np.array([1.0, -2.0, 0.0, np.nan, np.inf])


@dataclasses.dataclass
class Pair:
    jit: SymbolicJITCompiler
    ref: SymbolicJITCompiler


@dataclasses.dataclass
class Corpus:
    pairs: Dict[Tuple[str, str], Pair]
    elementwise_loss: Dict[str, Pair]
    stats: Dict[str, int]
    builds: List[dict]
    cache_dir: Path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Corpus:
    """Every corpus compiler, CPU_JIT (strict) and CPU_PYTHON, per dtype, in a module cache."""
    cache_dir = tmp_path_factory.mktemp("cpu_jit_corpus")
    # A short lock timeout: a build that waits for itself fails in a minute, not in ten.
    with config.override(cache_dir=str(cache_dir), lock_timeout=60.0):
        pairs, elementwise = {}, {}
        for dtype in DTYPES:
            for mode, configs in (("activation", ACT_CONFIGS), ("loss", LOSS_CONFIGS)):
                pairs[mode, dtype] = Pair(
                    SymbolicJITCompiler(configs, "CPU_JIT", mode=mode, dtype=dtype, strict=True),
                    SymbolicJITCompiler(configs, "CPU_PYTHON", mode=mode, dtype=dtype))
            elementwise[dtype] = Pair(
                SymbolicJITCompiler(["huber"], "CPU_JIT", mode="loss", dtype=dtype, strict=True),
                SymbolicJITCompiler(["huber"], "CPU_PYTHON", mode="loss", dtype=dtype))
        stats = cache.stats().as_dict()
        log = cache.default_cache().layout.log
    builds = [json.loads(line) for line in Path(log).read_text().splitlines()]
    return Corpus(pairs, elementwise, stats, builds, cache_dir)


def test_corpus_compiled_on_cpu_jit_in_few_builds(corpus):
    """Each corpus compiler runs on CPU_JIT; its structures were built in one compiler run per 24."""
    for (mode, dtype), pair in corpus.pairs.items():
        assert pair.jit.calculation_method == "CPU_JIT", (mode, dtype)
        assert pair.ref.calculation_method == "CPU_PYTHON"
    modules = [b for b in corpus.builds if b["kind"] == "c-module"]
    runtimes = [b for b in corpus.builds if b["kind"] == "c-runtime"]
    n_act = corpus.pairs["activation", "float32"].jit.n_structures
    n_loss = corpus.pairs["loss", "float32"].jit.n_structures
    per_build = FUNCTIONS_PER_BUILD
    # The activation corpus needs more than one compiler run; those run in parallel threads while
    # the caller holds every structure's lock (publishing from the pool threads used to deadlock).
    assert n_act > per_build, "the activation corpus no longer needs a split build; add structures here"
    # Per dtype: ceil(n / 24) runs for each compiler, or one per core when that leaves each at least
    # 4 functions; one runtime; the single-config "huber" loss reuses the loss corpus's function.
    assert len(runtimes) == 2
    runs = compiler_runs(n_act, usable_cores()) + compiler_runs(n_loss, usable_cores())
    assert runs >= math.ceil(n_act / per_build) + math.ceil(n_loss / per_build)
    assert len(modules) == 2 * runs
    assert all(b["functions"] <= per_build for b in modules)
    assert sum(b["functions"] for b in modules) == 2 * (n_act + n_loss)
    assert corpus.stats["builds"] == len(modules) + len(runtimes)
    assert corpus.stats["functions_built"] == 2 * (n_act + n_loss)


# -- inputs and the comparison -------------------------------------------------------------------
def _tile(vector, n, dtype):
    return np.ascontiguousarray(np.tile(np.asarray(vector, dtype), (n, 1)))


def _activation_inputs(kind, dtype):
    if kind == "moderate":
        z = MODERATE
        grad = np.linspace(-2, 2, z.size)
    elif kind == "special":  # every special value against every special gradient
        z = np.repeat(SPECIAL, GRADS.size)
        grad = np.tile(GRADS, SPECIAL.size)
    else:
        z = LARGE[dtype]
        grad = np.ones(z.size)
    return z.astype(dtype), grad.astype(dtype)


def _loss_inputs(kind, dtype):
    """(y_pred, y_true): every value of the set against ordinary values and the reverse."""
    values = {"moderate": np.concatenate([np.linspace(-3, 3, 41), _KINKS, [0.25, 0.75, 1e-8]]),
              "special": SPECIAL, "large": LARGE[dtype]}[kind]
    partners = np.array([-1.5, 0.0, 0.3, 1.0, 2.0])
    p = np.concatenate([np.repeat(values, partners.size), np.tile(partners, values.size)])
    t = np.concatenate([np.tile(partners, values.size), np.repeat(values, partners.size)])
    if kind == "special":
        p = np.concatenate([p, np.repeat(values, values.size)])
        t = np.concatenate([t, np.tile(values, values.size)])
    return p.astype(dtype), t.astype(dtype)


def _row_scales(pair, mode, dtype):
    """Per row, the largest finite |value| of forward and backward on moderate inputs (>= 1)."""
    if mode == "activation":
        z, grad = _activation_inputs("moderate", dtype)
        n = pair.ref.n_nodes
        values = [pair.ref.forward_kernel(_tile(z, n, dtype)), pair.ref.backward_kernel(_tile(z, n, dtype),
                                                                                        _tile(grad, n, dtype))]
    else:
        p, t = _loss_inputs("moderate", dtype)
        n = pair.ref.n_nodes
        values = [pair.ref.forward_kernel(_tile(p, n, dtype), _tile(t, n, dtype)),
                  pair.ref.backward_kernel(_tile(p, n, dtype), _tile(t, n, dtype))]
    scales = []
    for row in range(n):
        both = np.concatenate([np.abs(v[row].astype(np.float64)) for v in values])
        finite = both[np.isfinite(both)]
        scales.append(max(1.0, float(finite.max())) if finite.size else 1.0)
    return np.array(scales)


def assert_agree(got, expected, dtype, scales, labels, what):
    """Same NaN positions, same infinities, values within tolerance; every failing row reported."""
    got = np.asarray(got, np.float64)
    expected = np.asarray(expected, np.float64)
    assert got.shape == expected.shape
    problems = []
    for row in range(got.shape[0]):
        g, e = got[row], expected[row]
        nan_diff = np.flatnonzero(np.isnan(g) != np.isnan(e))
        if nan_diff.size:
            problems.append(f"row {row} {labels[row]!r}: NaN positions differ at {nan_diff[:6]}: "
                            f"got {g[nan_diff[:6]]}, CPU_PYTHON {e[nan_diff[:6]]}")
            continue
        with np.errstate(invalid="ignore"):  # inf - inf where both are inf: equal, caught by g == e
            ok = np.isnan(g) | (g == e) | (np.abs(g - e) <= ATOL[dtype] * scales[row] + RTOL[dtype] * np.abs(e))
        bad = np.flatnonzero(~ok)
        if bad.size:
            problems.append(f"row {row} {labels[row]!r}: {bad.size} value(s) differ, e.g. at {bad[:4]}: "
                            f"got {g[bad[:4]]!r}, CPU_PYTHON {e[bad[:4]]!r}")
    assert not problems, f"{what}: CPU_JIT and CPU_PYTHON disagree:\n  " + "\n  ".join(problems)


# -- the corpus ------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["moderate", "special", "large"])
def test_activation_corpus_agrees_with_cpu_python(corpus, kind, dtype):
    pair = corpus.pairs["activation", dtype]
    n = pair.jit.n_nodes
    z, grad = _activation_inputs(kind, dtype)
    z, grad = _tile(z, n, dtype), _tile(grad, n, dtype)
    scales = _row_scales(pair, "activation", dtype)
    fwd = pair.jit.forward_kernel(z)
    assert fwd.dtype == dtype and fwd.shape == z.shape
    assert_agree(fwd, pair.ref.forward_kernel(z), dtype, scales, ACT_CONFIGS, f"forward, {kind}, {dtype}")
    bwd = pair.jit.backward_kernel(z, grad)
    assert bwd.dtype == dtype and bwd.shape == z.shape
    assert_agree(bwd, pair.ref.backward_kernel(z, grad), dtype, scales, ACT_CONFIGS,
                 f"backward, {kind}, {dtype}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["moderate", "special", "large"])
def test_loss_corpus_agrees_with_cpu_python(corpus, kind, dtype):
    pair = corpus.pairs["loss", dtype]
    n = pair.jit.n_nodes
    p, t = _loss_inputs(kind, dtype)
    p, t = _tile(p, n, dtype), _tile(t, n, dtype)
    scales = _row_scales(pair, "loss", dtype)
    assert_agree(pair.jit.forward_kernel(p, t), pair.ref.forward_kernel(p, t), dtype, scales, LOSS_CONFIGS,
                 f"loss forward, {kind}, {dtype}")
    assert_agree(pair.jit.backward_kernel(p, t), pair.ref.backward_kernel(p, t), dtype, scales, LOSS_CONFIGS,
                 f"loss backward, {kind}, {dtype}")


# -- shapes and memory layouts: the driver's serial, parallel and chunked paths ---------------------
def _random(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=2.0, size=shape)
    flat = z.reshape(-1)
    flat[:: max(1, flat.size // 7)] = np.nan  # a few NaNs anywhere, including chunk boundaries
    return z.astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cols", [None, 1, 37], ids=["1-D", "batch-1", "odd-batch"])
def test_activation_shapes(corpus, cols, dtype):
    pair = corpus.pairs["activation", dtype]
    n = pair.jit.n_nodes
    shape = (n,) if cols is None else (n, cols)
    z, grad = _random(shape, dtype, 1), _random(shape, dtype, 2)
    scales = _row_scales(pair, "activation", dtype)
    fwd, bwd = pair.jit.forward_kernel(z), pair.jit.backward_kernel(z, grad)
    assert fwd.shape == shape and bwd.shape == shape
    as_rows = (lambda a: a.reshape(n, -1))
    assert_agree(as_rows(fwd), as_rows(pair.ref.forward_kernel(z)), dtype, scales, ACT_CONFIGS, f"forward {shape}")
    assert_agree(as_rows(bwd), as_rows(pair.ref.backward_kernel(z, grad)), dtype, scales, ACT_CONFIGS,
                 f"backward {shape}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_long_rows_take_the_parallel_chunked_path(corpus, dtype):
    """100 003 columns: several chunks per row (the last one short), spread over threads."""
    pair = corpus.pairs["activation", dtype]
    n, cols = pair.jit.n_nodes, 100_003
    z, grad = _random((n, cols), dtype, 3), _random((n, cols), dtype, 4)
    threads = _driver_threads(pair.jit, n, cols)
    if threads is not None and (os.cpu_count() or 1) >= 2 and config.settings().num_threads != 1 and _openmp():
        assert threads >= 2  # the driver's own answer: this shape runs in parallel
    scales = _row_scales(pair, "activation", dtype)
    assert_agree(pair.jit.forward_kernel(z), pair.ref.forward_kernel(z), dtype, scales, ACT_CONFIGS,
                 "forward, long rows")
    assert_agree(pair.jit.backward_kernel(z, grad), pair.ref.backward_kernel(z, grad), dtype, scales, ACT_CONFIGS,
                 "backward, long rows")


def test_serial_driver_gives_the_parallel_results(corpus):
    """HETEROSYMNN_NUM_THREADS=1 takes the serial path over the same functions (no build)."""
    pair = corpus.pairs["activation", "float32"]
    n, cols = pair.jit.n_nodes, 40_001
    z = _random((n, cols), "float32", 10)
    with config.override(cache_dir=str(corpus.cache_dir), num_threads=1):
        before = cache.stats().builds
        serial = SymbolicJITCompiler(ACT_CONFIGS, "CPU_JIT", dtype="float32", strict=True)
        assert cache.stats().builds == before
    assert _driver_threads(serial, n, cols) in (None, 1)
    scales = _row_scales(pair, "activation", "float32")
    assert_agree(serial.forward_kernel(z), pair.jit.forward_kernel(z), "float32", scales, ACT_CONFIGS,
                 "serial against parallel")


def _driver_threads(comp, rows, cols):
    """Threads the C driver uses for this shape with this compiler's settings (None: cannot ask)."""
    kernels = comp._kernels
    lib = getattr(getattr(kernels, "_run", None), "__self__", None)
    threads = getattr(lib, f"hs_threads_{'f32' if comp.dtype == np.float32 else 'f64'}", None)
    return None if threads is None else int(threads(rows, cols, getattr(kernels, "_threads", 0)))


def _openmp():
    from heterosymnn.toolchains.persisted import find_toolchain_persisted

    return find_toolchain_persisted(cache.default_cache()).openmp


@pytest.mark.parametrize("dtype", DTYPES)
def test_long_elementwise_loss_of_any_shape(corpus, dtype):
    """A single-config loss is element-wise over any shape (here 3-D and > 100k elements)."""
    pair = corpus.elementwise_loss[dtype]
    p, t = _random((3, 5, 9001), dtype, 5), _random((3, 5, 9001), dtype, 6)
    for which in ("forward_kernel", "backward_kernel"):
        got = getattr(pair.jit, which)(p, t)
        assert got.shape == p.shape
        assert_agree(got.reshape(1, -1), getattr(pair.ref, which)(p, t).reshape(1, -1), dtype, [2.0],
                     ["huber"], which)


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_inputs(corpus, dtype):
    """Strided, transposed and Fortran-ordered inputs give what their contiguous copies give."""
    pair = corpus.pairs["activation", dtype]
    n = pair.jit.n_nodes
    base = _random((n, 2 * 41), dtype, 7)
    grad = _random((41, n), dtype, 8).T  # a transposed view
    z = base[:, ::2]
    assert not z.flags.c_contiguous and not grad.flags.c_contiguous
    fwd = pair.jit.forward_kernel(z)
    bwd = pair.jit.backward_kernel(z, grad)
    np.testing.assert_array_equal(fwd, pair.jit.forward_kernel(np.ascontiguousarray(z)))
    np.testing.assert_array_equal(bwd, pair.jit.backward_kernel(np.ascontiguousarray(z), np.ascontiguousarray(grad)))
    np.testing.assert_array_equal(pair.jit.forward_kernel(np.asfortranarray(z)), fwd)
    scales = _row_scales(pair, "activation", dtype)
    assert_agree(fwd, pair.ref.forward_kernel(z), dtype, scales, ACT_CONFIGS, "forward, strided")
    assert_agree(bwd, pair.ref.backward_kernel(z, grad), dtype, scales, ACT_CONFIGS, "backward, strided")
    # The input was read, not written.
    np.testing.assert_array_equal(base[:, ::2], z)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cols", [None, 1, 37], ids=["1-D", "batch-1", "odd-batch"])
def test_loss_shapes(corpus, cols, dtype):
    pair = corpus.pairs["loss", dtype]
    n = pair.jit.n_nodes
    shape = (n,) if cols is None else (n, cols)
    p, t = _random(shape, dtype, 11), _random(shape, dtype, 12)
    scales = _row_scales(pair, "loss", dtype)
    for which in ("forward_kernel", "backward_kernel"):
        got = getattr(pair.jit, which)(p, t)
        assert got.shape == shape
        assert_agree(got.reshape(n, -1), getattr(pair.ref, which)(p, t).reshape(n, -1), dtype, scales,
                     LOSS_CONFIGS, f"{which} {shape}")


@pytest.mark.parametrize("cols", [13, 50_001])
def test_out_argument_and_in_place(corpus, cols):
    """``out`` given, and ``out`` being the input or the gradient (serial and parallel paths)."""
    pair = corpus.pairs["activation", "float64"]
    n = pair.jit.n_nodes
    z, grad = _random((n, cols), "float64", 9), _random((n, cols), "float64", 13)
    expected, expected_bwd = pair.jit.forward_kernel(z), pair.jit.backward_kernel(z, grad)
    out = np.empty_like(z)
    assert pair.jit.forward_kernel(z, out=out) is out
    np.testing.assert_array_equal(out, expected)
    inplace = z.copy()
    assert pair.jit.forward_kernel(inplace, out=inplace) is inplace
    np.testing.assert_array_equal(inplace, expected)
    for target in ("z", "grad"):
        zc, gc = z.copy(), grad.copy()
        out = zc if target == "z" else gc
        assert pair.jit.backward_kernel(zc, gc, out=out) is out
        np.testing.assert_array_equal(out, expected_bwd, err_msg=f"backward with out={target}")
    loss = corpus.pairs["loss", "float64"]
    p, t = _random((loss.jit.n_nodes, cols), "float64", 14), _random((loss.jit.n_nodes, cols), "float64", 15)
    expected = loss.jit.forward_kernel(p, t)
    np.testing.assert_array_equal(loss.jit.forward_kernel(p.copy(), t, out=p), expected)


BAD_CALLS = {
    "float64 input": (TypeError, lambda c, n: c.forward_kernel(np.ones((n, 4)))),
    "wrong row count": (ValueError, lambda c, n: c.forward_kernel(np.ones((n - 1, 4), np.float32))),
    "3-D input": (ValueError, lambda c, n: c.forward_kernel(np.ones((n, 4, 2), np.float32))),
    "a list": (TypeError, lambda c, n: c.forward_kernel([[1.0] * 4] * n)),
    "out of the wrong shape": (ValueError, lambda c, n: c.forward_kernel(np.ones((n, 4), np.float32),
                                                                          out=np.empty((n, 5), np.float32))),
    "out of the wrong dtype": (TypeError, lambda c, n: c.forward_kernel(np.ones((n, 4), np.float32),
                                                                         out=np.empty((n, 4)))),
    "non-contiguous out": (ValueError, lambda c, n: c.forward_kernel(np.ones((n, 4), np.float32),
                                                                      out=np.empty((n, 8), np.float32)[:, ::2])),
    "read-only out": (ValueError, lambda c, n: c.forward_kernel(
        np.ones((n, 4), np.float32), out=np.frombuffer(bytes(16 * n), np.float32).reshape(n, 4))),
    "grad of another shape": (ValueError, lambda c, n: c.backward_kernel(np.ones((n, 4), np.float32),
                                                                         np.ones((n, 5), np.float32))),
    "big-endian input": (TypeError, lambda c, n: c.forward_kernel(np.ones((n, 4), ">f4"))),
}


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_bad_arguments_are_clear_errors_never_a_crash(corpus, case):
    """The arrays reach C through raw pointers: anything unusual must be refused before that."""
    comp = corpus.pairs["activation", "float32"].jit
    error, call = BAD_CALLS[case]
    with pytest.raises(error):
        call(comp, comp.n_nodes)


def test_empty_batch_and_read_only_input(corpus):
    comp = corpus.pairs["activation", "float32"].jit
    n = comp.n_nodes
    assert comp.forward_kernel(np.ones((n, 0), np.float32)).shape == (n, 0)
    frozen = np.ones((n, 4), np.float32)
    frozen.flags.writeable = False
    np.testing.assert_array_equal(comp.forward_kernel(frozen), comp.forward_kernel(frozen.copy()))
