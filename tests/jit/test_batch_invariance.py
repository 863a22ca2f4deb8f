"""Batch invariance (README "Performance"): an element's result depends only on its own
input value(s), its node's formula and its node's constants.

Bit for bit, whatever the batch size, the element's position in its row (vector body or
padded tail), 1-D or 2-D input, ``out=`` or not, in place or not, features-last or
nodes-first, the thread count and the chunking of long rows; forward, backward, and the
``out`` of a backward that also computes the constants' gradient. Random layers over the
whole formula language (activations and losses) with random shapes and positions, on
CPU_JIT (the real compiler and cache) and CPU_PYTHON (NumPy); one more case runs a layer
long enough for OpenMP to split its rows into chunks, with 1 and 2 threads, and one
builds with zig (no OpenMP, no libmvec) where it is installed.
"""
from __future__ import annotations

import functools
import importlib.util
import warnings
from typing import List, Optional

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import formula_strategies as fs
from fuzzing import examples
from heterosymnn import CompilationWarning, FormulaParsingError, PerformanceWarning, SymbolicJITCompiler, config
from heterosymnn.codegen.c_runtime import CHUNK_ELEMENTS

METHODS = ("CPU_JIT", "CPU_PYTHON")
DTYPES = ("float32", "float64")
#: Formulas whose vector and scalar math round differently (libmvec), kinks, constants.
POOL = ["sin(num)", "tanh", "sigmoid", "gelu", "softplus", "relu", ("a*exp(-num**2) + b", {"a": 1.5, "b": -0.5}),
        ("leaky_relu", {"alpha": 0.2}), "log(1 + num**2) * cos(num)", "swish", "elu", "atan(num) + erf(num)"]


def bits(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array)
    return array.view(np.uint32 if array.dtype == np.float32 else np.uint64)


def assert_same_bits(got: np.ndarray, expected: np.ndarray, what: str, *, nan_bits: bool = True) -> None:
    """Bit-identical; with ``nan_bits=False`` any NaN matches any NaN (NumPy's own loops give a
    NaN's sign and payload by position, so CPU_PYTHON is held to value identity for NaN)."""
    assert got.shape == expected.shape, f"{what}: shape {got.shape} vs {expected.shape}"
    differ = bits(got) != bits(expected)
    if not nan_bits:
        differ &= ~(np.isnan(got) & np.isnan(expected))
    if differ.any():
        first = np.unravel_index(np.flatnonzero(differ)[0], differ.shape)
        raise AssertionError(f"{what}: {int(differ.sum())} of {differ.size} elements differ, first at {first}: "
                             f"{got[first]!r} vs {expected[first]!r}")


def _build(configs, mode: str, method: str, dtype: str) -> Optional[SymbolicJITCompiler]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompilationWarning)
        warnings.simplefilter("ignore", PerformanceWarning)
        try:
            return SymbolicJITCompiler(list(configs), method, mode=mode, dtype=dtype, strict=True)
        except FormulaParsingError:
            return None  # a random formula the parser legitimately rejects


def _kernels(comp: SymbolicJITCompiler, mode: str):
    """(forward, backward) as functions of (a, other) with the keyword arguments passed on."""
    if mode == "activation":
        return (lambda a, other, **kw: comp.forward_kernel(a, **kw),
                lambda a, other, **kw: comp.backward_kernel(a, other, **kw))
    return (lambda a, other, **kw: comp.forward_kernel(a, other, **kw),
            lambda a, other, **kw: comp.backward_kernel(a, other, **kw))


def _check_layer(comp: SymbolicJITCompiler, mode: str, a: np.ndarray, other: np.ndarray, data, what: str) -> None:
    """Every way of computing the elements of ``a`` gives the bits of the plain 2-D call."""
    n, batch = a.shape
    forward, backward = _kernels(comp, mode)
    same = functools.partial(assert_same_bits, nan_bits=comp.calculation_method != "CPU_PYTHON")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))
    with np.errstate(all="ignore"):
        for name, kernel in (("forward", forward), ("backward", backward)):
            full = kernel(a, other)
            here = f"{what} {name}"
            k = data.draw(st.integers(0, batch - 1), label="column")
            column = kernel(np.ascontiguousarray(a[:, k]), np.ascontiguousarray(other[:, k]))
            same(column, full[:, k], f"{here}: 1-D column {k}")
            lo = data.draw(st.integers(0, batch - 1), label="lo")
            hi = data.draw(st.integers(lo + 1, batch), label="hi")
            same(kernel(a[:, lo:hi], other[:, lo:hi]), full[:, lo:hi], f"{here}: columns {lo}:{hi}")
            # The same values at another place of a longer batch, among other values.
            at = data.draw(st.integers(0, 19), label="at")
            wide = data.draw(st.integers(batch + at, batch + at + 40), label="wide")
            big_a = rng.normal(scale=3.0, size=(n, wide)).astype(a.dtype)
            big_o = rng.normal(size=(n, wide)).astype(a.dtype)
            big_a[:, at:at + batch], big_o[:, at:at + batch] = a, other
            same(kernel(big_a, big_o)[:, at:at + batch], full, f"{here}: at column {at} of {wide}")
            out = np.full_like(a, 7.0)
            assert kernel(a, other, out=out) is out
            same(out, full, f"{here}: out=")
            in_place = a.copy()
            kernel(in_place, other, out=in_place)
            same(in_place, full, f"{here}: in place")
            transposed = kernel(np.ascontiguousarray(a.T), np.ascontiguousarray(other.T), features_last=True)
            same(transposed.T, full, f"{here}: features last")


@st.composite
def pool_layers(draw) -> fs.Layer:
    """1 to 9 nodes of the pool in any order; a node's constants drawn for it (same structure)."""
    configs = []
    for index in draw(st.lists(st.integers(0, len(POOL) - 1), min_size=1, max_size=9)):
        config = POOL[index]
        if isinstance(config, tuple):
            values = st.floats(-3, 3, allow_nan=False, width=32)
            config = (config[0], {name: draw(values) for name in config[1]})
        configs.append(config)
    return fs.Layer("activation", tuple(configs))


language_layers = st.sampled_from(["activation", "loss"]).flatmap(
    lambda mode: fs.layers(mode, min_nodes=1, max_nodes=5, max_formulas=2, max_leaves=6))
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                      HealthCheck.function_scoped_fixture])


def _check_random_layer(layer: fs.Layer, dtype: str, data) -> None:
    n = len(layer.configs)
    batch = data.draw(st.integers(1, 37), label="batch")
    a, other = data.draw(fs.input_arrays(n, dtype, batch, count=2), label="inputs")
    built = 0
    for method in METHODS:
        comp = _build(layer.configs, layer.mode, method, dtype)
        if comp is None:
            continue
        built += 1
        _check_layer(comp, layer.mode, a, other, data, f"{method} {dtype} {layer.configs}")
    assume(built)


@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=examples(12), **SETTINGS)
@given(layer=pool_layers(), data=st.data())
def test_random_layers_of_the_pool_are_batch_invariant(dtype, layer, data):
    """Many layers for the price of one build: the pool is compiled by the first example."""
    _check_random_layer(layer, dtype, data)


@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=examples(2), **SETTINGS)
@given(layer=language_layers, data=st.data())
def test_random_formulas_are_batch_invariant(dtype, layer, data):
    """The whole formula language, activations and losses (a build per example: few of them)."""
    _check_random_layer(layer, dtype, data)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_named_formulas_are_batch_invariant(method, dtype):
    """The pool of formulas whose vector math differs from the scalar math, every batch size
    from 1 to two blocks and a half of the widest vector, every column."""
    comp = _build(POOL, "activation", method, dtype)
    rng = np.random.default_rng(3)
    a = (rng.normal(size=(len(POOL), 41)) * 4).astype(dtype)
    g = rng.normal(size=a.shape).astype(dtype)
    full_f, full_b = comp.forward_kernel(a), comp.backward_kernel(a, g)
    if method == "CPU_JIT":  # the constants-gradient module: its ``out`` is the backward's
        grad = np.zeros(len(comp.constant_names))
        assert_same_bits(comp.backward_kernel(a, g, constants_grad=grad), full_b, f"{dtype} with constants_grad")
        assert_same_bits(comp.backward_kernel(a[:, 3:20], g[:, 3:20], constants_grad=grad), full_b[:, 3:20],
                         f"{dtype} with constants_grad, columns 3:20")
    for batch in range(1, 42):
        for start in (0, 41 - batch):
            cols = slice(start, start + batch)
            assert_same_bits(comp.forward_kernel(a[:, cols]), full_f[:, cols], f"{method} fwd {batch}@{start}")
            assert_same_bits(comp.backward_kernel(a[:, cols], g[:, cols]), full_b[:, cols],
                             f"{method} bwd {batch}@{start}")


def _long_layer_results(threads: int, dtype: str) -> List[np.ndarray]:
    with config.override(num_threads=threads):
        comp = _build(POOL, "activation", "CPU_JIT", dtype)
    rng = np.random.default_rng(5)
    # Rows longer than two chunks, not a whole number of them: parallel, chunked, tails.
    a = (rng.normal(size=(len(POOL), 2 * CHUNK_ELEMENTS + 77)) * 4).astype(dtype)
    g = rng.normal(size=a.shape).astype(dtype)
    grad = np.zeros(len(comp.constant_names))
    return [comp.forward_kernel(a), comp.backward_kernel(a, g), comp.backward_kernel(a, g, constants_grad=grad),
            grad, comp.forward_kernel(np.ascontiguousarray(a.T), features_last=True).T,
            comp.forward_kernel(np.ascontiguousarray(a[:, CHUNK_ELEMENTS - 5:CHUNK_ELEMENTS + 6])), a]


@pytest.mark.parametrize("dtype", DTYPES)
def test_thread_count_and_chunks_change_no_bit(dtype):
    one, two = _long_layer_results(1, dtype), _long_layer_results(2, dtype)
    names = ("forward", "backward", "backward with constants_grad", "constants_grad", "features last",
             "columns around a chunk boundary")
    for name, first, second in zip(names, one, two):
        assert_same_bits(second, first, f"{dtype} {name}: 2 threads vs 1")
    forward, backward, with_grad, _, features_last, around = one[:6]
    assert_same_bits(with_grad, backward, f"{dtype} backward with constants_grad vs without")
    assert_same_bits(features_last, forward, f"{dtype} features last vs nodes first")
    assert_same_bits(around, forward[:, CHUNK_ELEMENTS - 5:CHUNK_ELEMENTS + 6], f"{dtype} columns around a chunk")


@pytest.mark.skipif(importlib.util.find_spec("ziglang") is None, reason="ziglang (pip install ziglang) not installed")
def test_zig_builds_are_batch_invariant():
    """zig's clang: no OpenMP runtime (``-fopenmp-simd``), no libmvec."""
    with config.override(toolchain="zig"):
        comp = _build(POOL, "activation", "CPU_JIT", "float32")
        assert comp is not None and comp.calculation_method == "CPU_JIT"
        rng = np.random.default_rng(9)
        a = (rng.normal(size=(len(POOL), 29)) * 4).astype(np.float32)
        full = comp.forward_kernel(a)
        for k in range(a.shape[1]):
            assert_same_bits(comp.forward_kernel(np.ascontiguousarray(a[:, k])), full[:, k], f"zig column {k}")
            assert_same_bits(comp.forward_kernel(a[:, k:]), full[:, k:], f"zig columns {k}:")
