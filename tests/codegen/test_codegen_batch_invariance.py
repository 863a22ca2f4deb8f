"""Batch invariance of the generated row functions, under every set of build flags.

The whole corpus, built the way each kind of toolchain builds it (GCC with OpenMP and
libmvec, a compiler with only ``-fopenmp-simd``, and the generic path with neither
``omp simd`` nor OpenMP), must give an element the same bits wherever it sits in the row:
alone, in the vector body, in the padded tail, in a window starting anywhere. Forward,
backward and the constants-gradient function (whose ``out`` must also be the backward's).
"""
from __future__ import annotations

from typing import Dict

import numpy as np
import pytest

from codegen_support import CORPUS, DTYPES, Built, build_cffi, have_gcc, production_flags, special_values
from heterosymnn.codegen import render_c_module, render_runtime
from heterosymnn.symbolic.structure import ACTIVATION

#: Long enough for several blocks of any width and a tail; windows start at every offset.
LENGTH = 71
WINDOWS = ((0, 17), (1, 8), (3, 29), (5, 66), (8, 16), (9, 1), (37, 16), (40, 31), (64, 7))
FLAG_SETS = ("simd", "none")


def bits(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array).view(np.uint32 if array.dtype == np.float32 else np.uint64)


def assert_same_bits(got: np.ndarray, expected: np.ndarray, what: str) -> None:
    differ = bits(got) != bits(expected)
    if differ.any():
        where = np.flatnonzero(differ)
        raise AssertionError(f"{what}: {differ.sum()} of {differ.size} elements differ, first at {where[0]}: "
                             f"{got.ravel()[where[0]]!r} vs {expected.ravel()[where[0]]!r}")


@pytest.fixture(scope="module")
def variants(built, tmp_path_factory) -> Dict[str, Dict[str, Built]]:
    """The corpus built with each flag set (``openmp`` is the session's production build)."""
    if not have_gcc():
        pytest.skip("no gcc on PATH")
    root = tmp_path_factory.mktemp("invariance_build")
    out = {"openmp": built}
    for variant in FLAG_SETS:
        compile_args, link_args = production_flags(variant)
        out[variant] = {}
        for dtype in DTYPES:
            cm, rs = render_c_module(CORPUS, dtype), render_runtime(dtype)
            tag = f"{variant}_{dtype[-2:]}"
            kernels = build_cffi(root / tag, f"_hs_inv_{tag}", cm.cdef, cm.source,
                                 extra_compile_args=compile_args, extra_link_args=link_args)
            out[variant][dtype] = Built(dtype, kernels, None, cm, rs)
    return out


def _inputs(structure, dtype: str):
    """(a, b, g) of LENGTH elements: specials first, then ordinary values of both signs."""
    rng = np.random.default_rng(7)
    specials = special_values(dtype)
    a = np.concatenate([specials, rng.normal(scale=3.0, size=LENGTH)])[:LENGTH].astype(dtype)
    a = np.roll(a, 11)  # specials in the vector body and in the tail
    b = None if structure.mode == ACTIVATION else rng.normal(size=LENGTH).astype(dtype)
    g = rng.normal(size=LENGTH).astype(dtype) if structure.mode == ACTIVATION else None
    return a, b, g


def _window(array, start, length):
    return None if array is None else np.ascontiguousarray(array[start:start + length])


@pytest.mark.parametrize("variant", ("openmp",) + FLAG_SETS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_an_element_has_the_same_bits_wherever_it_sits(variants, variant, dtype):
    built = variants[variant][dtype]
    for structure in CORPUS:
        a, b, g = _inputs(structure, dtype)
        with np.errstate(all="ignore"):
            for which in ("fwd", "bwd"):
                full = built.row(structure, which, a, b, g)
                for k in range(LENGTH):  # alone: a row of one element, all tail
                    one = built.row(structure, which, a[k:k + 1], _window(b, k, 1), _window(g, k, 1))
                    assert_same_bits(one, full[k:k + 1], f"{variant} {dtype} {which} {structure.expr} element {k}")
                for start, length in WINDOWS:
                    part = built.row(structure, which, _window(a, start, length), _window(b, start, length),
                                     _window(g, start, length))
                    assert_same_bits(part, full[start:start + length],
                                     f"{variant} {dtype} {which} {structure.expr} window {start}+{length}")
            if structure.key not in built.cmodule.constants_grad:
                continue
            backward = built.row(structure, "bwd", a, b, g)
            for start, length in ((0, LENGTH), *WINDOWS):
                out, _ = built.cgrad(structure, _window(a, start, length), _window(b, start, length),
                                     _window(g, start, length))
                assert_same_bits(out, backward[start:start + length],
                                 f"{variant} {dtype} constants-gradient out {structure.expr} window {start}+{length}")
