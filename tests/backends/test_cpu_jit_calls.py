"""CPU_JIT's bound activation kernels (backends/cpu_jit_calls.py) and the driver entry they call,
``hs_call_*`` (codegen/c_calls.py).

With one column the driver gathers rows that share a function and constants into one call.
Every result must be the bits of the same values computed one row at a time: here the same
values sit in the first columns of a wider batch, which runs one call per row (and small
batches of several columns are checked the same way). Real compiler, real cache, real arrays.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from heterosymnn import SymbolicJITCompiler
from heterosymnn.backends import cpu_modules

DTYPES = ("float32", "float64")
WIDE = 64  # columns: one call per row
#: Shared formulas, some with constants: equal constants (nodes 1 and 5) share a call, different
#: constants (3 and 7) and a -0.0 against a 0.0 (8 and 9: the sign of a zero result) do not.
CONFIGS = ["sin(num)", ("a*tanh(b*num)", {"a": 1.5, "b": 0.7}), "relu", ("a*tanh(b*num)", {"a": -2.0, "b": 0.3}),
           "sin(num)", ("a*tanh(b*num)", {"a": 1.5, "b": 0.7}), "sigmoid", ("a*tanh(b*num)", {"a": 1.5, "b": 0.71}),
           ("a*num", {"a": 0.0}), ("a*num", {"a": -0.0}), "relu", "softplus", "sigmoid"]
N = len(CONFIGS)


def _bits(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array).view(np.uint32 if array.dtype == np.float32 else np.uint64)


def _values(rows: int, cols: int, dtype: str, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(scale=3.0, size=(rows, cols)).astype(dtype)


@pytest.fixture(scope="module", params=DTYPES)
def comp(request, tmp_path_factory):
    from heterosymnn import config

    with config.override(cache_dir=str(tmp_path_factory.mktemp("cache"))):
        yield SymbolicJITCompiler(CONFIGS, "CPU_JIT", dtype=request.param, strict=True)


@pytest.mark.parametrize("cols", [1, 2, 3, 7, 8, 9, 16, 17, 40])
def test_small_batches_give_the_bits_of_one_call_per_row(comp, cols):
    dtype = comp.dtype.name
    wide, grad = _values(N, WIDE, dtype, cols), _values(N, WIDE, dtype, 100 + cols)
    forward, backward = comp.forward_kernel(wide), comp.backward_kernel(wide, grad)
    z, g = wide[:, :cols].copy(), grad[:, :cols].copy()
    np.testing.assert_array_equal(_bits(comp.forward_kernel(z)), _bits(forward[:, :cols]))
    np.testing.assert_array_equal(_bits(comp.backward_kernel(z, g)), _bits(backward[:, :cols]))
    if cols == 1:  # 1-D: one element per node
        np.testing.assert_array_equal(_bits(comp.forward_kernel(z[:, 0].copy())), _bits(forward[:, 0]))
    # In place, on the gathered path as well.
    in_place, g_in_place = z.copy(), g.copy()
    comp.forward_kernel(in_place, out=in_place)
    comp.backward_kernel(z, g_in_place, out=g_in_place)
    np.testing.assert_array_equal(_bits(in_place), _bits(forward[:, :cols]))
    np.testing.assert_array_equal(_bits(g_in_place), _bits(backward[:, :cols]))


def test_equal_and_different_constants(comp):
    """Values against NumPy, and a constant changed after construction regroups the rows."""
    z = _values(N, 3, comp.dtype.name, 7)
    got = comp.forward_kernel(z)
    rtol = 1e-5 if comp.dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got[1], 1.5 * np.tanh(0.7 * z[1]), rtol=rtol)
    np.testing.assert_allclose(got[7], 1.5 * np.tanh(0.71 * z[7]), rtol=rtol)
    assert np.all(np.signbit(got[8]) == (z[8] < 0)) and np.all(np.signbit(got[9]) == (z[9] > 0))
    comp.set_constants(5, a=3.0)
    try:
        again = comp.forward_kernel(z)
        np.testing.assert_array_equal(again[1], got[1])
        np.testing.assert_allclose(again[5], 3.0 * np.tanh(0.7 * z[5]), rtol=rtol)
    finally:
        comp.set_constants(5, a=1.5)


def test_a_shifted_out_on_the_gathered_path(comp):
    """``out`` one row away from ``z`` in one buffer: the inputs as they were, not as written."""
    buffer = _values(N + 1, 2, comp.dtype.name, 11)
    expected = comp.forward_kernel(buffer[:N].copy())
    comp.forward_kernel(buffer[:N], out=buffer[1:])
    np.testing.assert_array_equal(buffer[1:], expected)


def test_arguments_the_cheap_path_declines_get_the_checked_messages(comp):
    dtype = comp.dtype
    z = _values(N, 2, dtype.name, 3)
    read_only = z.copy()
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="out is read-only"):
        comp.forward_kernel(read_only, out=read_only)
    with pytest.raises(ValueError, match="out is read-only"):
        comp.backward_kernel(z, read_only, out=read_only)
    with pytest.raises(ValueError, match=re.escape(f"grad has shape ({N}, 1), but z has shape ({N}, 2)")):
        comp.backward_kernel(z, z[:, :1].copy())
    with pytest.raises(ValueError, match="z must have shape"):
        comp.forward_kernel(z.reshape(N, 1, 2))
    with pytest.raises(ValueError, match=f"z has {N + 1} rows, but the layer has {N} nodes"):
        comp.forward_kernel(_values(N + 1, 2, dtype.name, 4))
    with pytest.raises(TypeError, match="z must be a NumPy ndarray, got builtins.list"):
        comp.forward_kernel(z.tolist())
    other = "float64" if dtype == np.float32 else "float32"
    with pytest.raises(TypeError, match=f"grad has dtype {other}"):
        comp.backward_kernel(z, z.astype(other))
    with pytest.raises(TypeError, match=f"out has dtype {other}"):
        comp.forward_kernel(z, out=np.empty(z.shape, other))
    # Not contiguous: copied by the checked path, same values.
    strided = np.asfortranarray(z)
    np.testing.assert_array_equal(comp.forward_kernel(strided), comp.forward_kernel(z))


def test_keywords_reach_the_checked_path(comp):
    z = _values(N, 4, comp.dtype.name, 5)
    np.testing.assert_array_equal(comp.forward_kernel(z.T.copy(), features_last=True), comp.forward_kernel(z).T)
    grad = np.ones_like(z)
    constants_grad = np.zeros(len(comp.constant_names))
    out = comp.backward_kernel(z, grad, constants_grad=constants_grad)
    np.testing.assert_array_equal(out, comp.backward_kernel(z, grad))
    assert np.isfinite(constants_grad).all() and constants_grad.any()


def test_function_tables_look_up_each_structure_once(monkeypatch):
    """A layer's tables cost one read of a module's export tables per structure, not one per node."""
    looked_up = []
    real = cpu_modules.exported_functions

    def spy(module):
        looked_up.append(module)
        return real(module)

    monkeypatch.setattr(cpu_modules, "exported_functions", spy)
    configs = [CONFIGS[i % 4] for i in range(256)]
    comp = SymbolicJITCompiler(configs, "CPU_JIT", dtype="float32", strict=True)
    assert len(looked_up) == comp.n_structures == 3
    z = _values(256, 3, "float32", 9)
    wide = np.concatenate([z, _values(256, WIDE, "float32", 10)], axis=1)
    np.testing.assert_array_equal(_bits(comp.forward_kernel(z)), _bits(comp.forward_kernel(wide)[:, :3]))
