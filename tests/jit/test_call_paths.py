"""The cheap call path (README "Performance"): views, in place and ``out=`` take it, and a
``out`` that partly overlaps an input is still computed as if the input had been copied.

The partial overlaps are real arrays sharing one buffer: on CPU_JIT the layer driver finds
them from the pointers and the call runs again on copies; elsewhere the compiler's checked
path copies first. The spy on the checked path only counts calls (the real function runs).
"""
from __future__ import annotations

import numpy as np
import pytest

from heterosymnn import SymbolicJITCompiler
from heterosymnn.jit import arrays

METHODS = ("CPU_JIT", "CPU_PYTHON")
CONFIGS = ["sin(num)", "tanh", ("a*num + b", {"a": 2.0, "b": 0.5}), "sigmoid"]
N = len(CONFIGS)


@pytest.fixture(params=METHODS)
def comp(request):
    return SymbolicJITCompiler(CONFIGS, request.param, dtype="float32", strict=True)


def _values(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(scale=2.0, size=(rows, cols)).astype(np.float32)


@pytest.mark.parametrize("shift", [1, -1, 2])
def test_out_shifted_over_z_gives_the_result_of_a_copy(comp, shift):
    """``out`` rows ``shift`` rows away from ``z``'s in one buffer: every element must come
    from the input as it was, never from a value the call already wrote."""
    buffer = _values(N + abs(shift), 9)
    z = buffer[max(-shift, 0):][:N]
    out = buffer[max(shift, 0):][:N]
    expected = comp.forward_kernel(z.copy())
    assert comp.forward_kernel(z, out=out) is out
    np.testing.assert_array_equal(out, expected)

    buffer = _values(N + abs(shift), 9, seed=1)
    grad = _values(N, 9, seed=2)
    z = buffer[max(-shift, 0):][:N]
    out = buffer[max(shift, 0):][:N]
    expected = comp.backward_kernel(z.copy(), grad)
    comp.backward_kernel(z, grad, out=out)
    np.testing.assert_array_equal(out, expected)


def test_out_overlapping_grad_by_part_of_a_row(comp):
    flat = _values(1, N * 5 + 3).ravel()
    z = _values(N, 5, seed=3)
    grad = flat[:N * 5].reshape(N, 5)
    out = flat[3:3 + N * 5].reshape(N, 5)
    expected = comp.backward_kernel(z, grad.copy())
    comp.backward_kernel(z, grad, out=out)
    np.testing.assert_array_equal(out, expected)


def test_in_place_and_views_equal_plain_calls(comp):
    z, grad = _values(N, 6, seed=4), _values(N, 6, seed=5)
    forward, backward = comp.forward_kernel(z), comp.backward_kernel(z, grad)
    in_place = z.copy()
    assert comp.forward_kernel(in_place, out=in_place) is in_place
    np.testing.assert_array_equal(in_place, forward)
    grad_in_place = grad.copy()
    assert comp.backward_kernel(z, grad_in_place, out=grad_in_place) is grad_in_place
    np.testing.assert_array_equal(grad_in_place, backward)
    z_in_place = z.copy()
    comp.backward_kernel(z_in_place, grad, out=z_in_place)
    np.testing.assert_array_equal(z_in_place, backward)
    reshaped = z.ravel().copy().reshape(N, 6)
    rows = np.concatenate([_values(2, 6, seed=6), z]).copy()[2:]
    out = np.empty_like(z)
    for view in (reshaped, rows):
        assert view.base is not None
        np.testing.assert_array_equal(comp.forward_kernel(view, out=out), forward)
        np.testing.assert_array_equal(comp.backward_kernel(view, grad, out=out), backward)


def test_views_and_in_place_skip_the_checked_path_on_cpu_jit(monkeypatch):
    comp = SymbolicJITCompiler(CONFIGS, "CPU_JIT", dtype="float32", strict=True)
    calls = []
    real = arrays.output

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(arrays, "output", spy)
    z, grad = _values(N, 1, seed=7), _values(N, 1, seed=8)
    view = z.ravel().copy().reshape(N, 1)
    out = np.empty_like(z)
    comp.forward_kernel(view, out=out)
    comp.forward_kernel(view)
    in_place = z.copy()
    comp.forward_kernel(in_place, out=in_place)
    comp.backward_kernel(view, grad, out=out)
    comp.backward_kernel(z, in_place, out=in_place)
    shifted = _values(N + 1, 1, seed=9)
    comp.forward_kernel(shifted[:N], out=shifted[1:])  # overlap: the driver copies, no checks
    assert calls == []
    comp.forward_kernel(np.asfortranarray(_values(N, 3)))  # not C-contiguous: checked and copied
    assert len(calls) == 1


def test_the_checks_still_name_the_problem(comp):
    z = _values(N, 3)
    with pytest.raises(ValueError, match=r"out has shape \(4, 2\), expected \(4, 3\)"):
        comp.forward_kernel(z, out=np.empty((N, 2), np.float32))
    with pytest.raises(TypeError, match="out has dtype float64, expected float32"):
        comp.forward_kernel(z, out=np.empty((N, 3)))
    read_only = np.empty_like(z)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="out is read-only"):
        comp.forward_kernel(z, out=read_only)
    with pytest.raises(ValueError, match="out must be C-contiguous"):
        comp.forward_kernel(z, out=np.empty((3, N), np.float32).T)


def test_the_backend_knows_the_drivers_overlap_status():
    from heterosymnn.backends import cpu_jit
    from heterosymnn.codegen import c_runtime

    assert cpu_jit.OVERLAP == c_runtime.OVERLAP  # kept apart: the warm path never imports codegen
