"""Built kernels agree with NumPy evaluation, row functions and driver alike."""
from __future__ import annotations

import numpy as np
import pytest

from codegen_support import (
    ACTIVATION, CORPUS, DTYPES, activation_inputs, check, grad_inputs, loss_inputs,
)

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
