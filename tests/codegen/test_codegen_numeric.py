"""Built kernels agree with NumPy evaluation, row functions and driver alike."""
from __future__ import annotations

import numpy as np
import pytest

from codegen_support import (
    ACTIVATION, CORPUS, DTYPES, activation_inputs, build_cffi, check, fast_flags, grad_inputs,
    loss_inputs, special_values,
)
from heterosymnn.codegen.c_prelude import COMMON_PRELUDE, render_helpers
from heterosymnn.codegen.c_printer import CPrinter

IDS = [f"{i:02d}-{s.mode[0]}-{str(s.expr)[:40]}" for i, s in enumerate(CORPUS)]


def _inputs(structure, dtype):
    if structure.mode == ACTIVATION:
        a = activation_inputs(dtype)
        return a, None, grad_inputs(a.size, dtype)
    a, b = loss_inputs(dtype)
    return a, b, None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("structure", CORPUS, ids=IDS)
def test_row_functions_match_numpy(built, structure, dtype):
    mod = built[dtype]
    a, b, g = _inputs(structure, dtype)
    check(mod.row(structure, "fwd", a, b), structure, "fwd", dtype, a, b)
    check(mod.row(structure, "bwd", a, b, g), structure, "bwd", dtype, a, b, g)


def test_zero_length_row_is_a_no_op(built):
    mod = built["float32"]
    empty = np.empty(0, np.float32)
    assert mod.row(CORPUS[0], "fwd", empty).size == 0


def _layer(structures, cols, dtype):
    """(rows, cols) inputs: every row sees the special values and random ones."""
    rows = len(structures)
    base = activation_inputs(dtype, n_random=max(0, cols))
    rng = np.random.default_rng(5)
    a = np.stack([rng.permutation(base)[:cols] for _ in range(rows)])
    g = np.stack([rng.permutation(grad_inputs(base.size, dtype))[:cols] for _ in range(rows)])
    return np.ascontiguousarray(a), np.ascontiguousarray(g)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("path", ["serial", "parallel"])
def test_driver_runs_every_row_with_its_function(built, dtype, path):
    mod = built[dtype]
    structures = [s for s in CORPUS if s.mode == ACTIVATION]
    rs = mod.rsource
    if path == "serial":
        cols = max(1, rs.parallel_min_elements // len(structures) - 1)  # just below
        nthreads = 0
    else:
        cols = rs.chunk_elements * 2 + 123  # several chunks per row, ragged last one
        nthreads = 2  # forces the parallel path even on a single core
    threads = getattr(mod.runtime.lib, rs.threads_name)(len(structures), cols, nthreads)
    assert (threads == 1) if path == "serial" else (threads == 2)
    a, g = _layer(structures, cols, dtype)
    fwd = mod.run(structures, "fwd", a, nthreads=nthreads)
    bwd = mod.run(structures, "bwd", a, g=g, nthreads=nthreads)
    for r, structure in enumerate(structures):
        check(fwd[r], structure, "fwd", dtype, a[r], what=f"row {r} fwd")
        check(bwd[r], structure, "bwd", dtype, a[r], g=g[r], what=f"row {r} bwd")


@pytest.mark.parametrize("dtype", DTYPES)
def test_driver_loss_rows_and_null_pointers(built, dtype):
    mod = built[dtype]
    structures = [s for s in CORPUS if s.mode != ACTIVATION]
    yp, yt = loss_inputs(dtype)
    a = np.ascontiguousarray(np.tile(yp, (len(structures), 1)))
    b = np.ascontiguousarray(np.tile(yt, (len(structures), 1)))
    for which in ("fwd", "bwd"):
        out = mod.run(structures, which, a, b)  # g is NULL
        for r, structure in enumerate(structures):
            check(out[r], structure, which, dtype, a[r], b[r], what=f"loss row {r} {which}")


@pytest.mark.parametrize("nthreads", [1, 2])
def test_driver_accepts_null_params_for_slot_free_rows(built, nthreads):
    mod = built["float32"]
    structures = [CORPUS[0]] * 4  # sin(num): no slots
    a = np.ascontiguousarray(np.tile(np.linspace(-5, 5, 20000, dtype=np.float32), (4, 1)))
    out = mod.run(structures, "fwd", a, nthreads=nthreads, null_params=True)
    np.testing.assert_allclose(out, np.sin(a), rtol=4e-6, atol=1e-6)


def test_driver_handles_empty_and_default_threads(built):
    mod = built["float64"]
    structures = [CORPUS[0]] * 3
    empty = np.empty((3, 0))
    assert mod.run(structures, "fwd", empty).shape == (3, 0)
    # nthreads=0 on a large layer: OpenMP default, whatever the core count
    a = np.ascontiguousarray(np.tile(np.linspace(-5, 5, 40000), (3, 1)))
    out = mod.run(structures, "fwd", a)
    np.testing.assert_allclose(out, np.sin(a), rtol=1e-13, atol=1e-15)


_HELPER_CHECK = """
{helpers}
void both({T} k, const {T} *x, int64_t n, {T} *out) {{
    for (int64_t i = 0; i < n; ++i) {{
        out[6 * i + 0] = hs_max_{tag}(k, x[i]);
        out[6 * i + 1] = hs_max_k_{tag}(k, x[i]);
        out[6 * i + 2] = hs_min_{tag}(k, x[i]);
        out[6 * i + 3] = hs_min_k_{tag}(k, x[i]);
        out[6 * i + 4] = hs_heaviside_{tag}(x[i], k == 1 ? 1 : 0);
        out[6 * i + 5] = k == 1 ? hs_heaviside1_{tag}(x[i]) : hs_heaviside0_{tag}(x[i]);
    }}
}}
"""


@pytest.mark.parametrize("dtype", DTYPES)
def test_one_blend_helpers_are_the_general_ones_bit_for_bit(tmp_path, dtype):
    """max_k/min_k (a literal first argument) and heaviside0/1 give the general helpers'
    bits on signed zeros, NaN, infinities and ties, compiled with the production flags."""
    printer = CPrinter(dtype, {})
    kinds = ["heaviside", "heaviside0", "heaviside1", "max", "max_k", "min", "min_k"]
    helpers = render_helpers(kinds, ctype=printer.ctype, qualifier="HS_INLINE",
                             name=printer.helper_name, literal=printer._float_literal)
    source = COMMON_PRELUDE + _HELPER_CHECK.format(helpers=helpers, T=printer.ctype, tag=printer.tag)
    cdef = f"void both({printer.ctype} k, const {printer.ctype} *x, int64_t n, {printer.ctype} *out);"
    mod = build_cffi(tmp_path, f"_hs_helpers_{printer.tag}", cdef, source, **fast_flags())
    x = np.concatenate([special_values(dtype), np.array([1.0, 0.0, -0.0], dtype)])
    ptr = f"{printer.ctype} *"
    for k in (0.0, -0.0, 1.0, -1.0, np.inf, -np.inf):
        out = np.empty(6 * x.size, dtype)
        mod.lib.both(k, mod.ffi.cast(ptr, mod.ffi.from_buffer(x)), x.size,
                     mod.ffi.cast(ptr, mod.ffi.from_buffer(out)))
        pairs = out.reshape(-1, 3, 2)
        bits = pairs.view(np.uint32 if dtype == "float32" else np.uint64)
        assert np.array_equal(bits[..., 0], bits[..., 1]), (k, x, pairs)
