"""CPU_JIT's constants' gradient: the same bits whatever the thread count and call, rows without
constants, losses, a warm start in a new process, and a structure whose gradient cannot be made.

(Agreement with finite differences and with CPU_PYTHON: tests/jit/test_constants_grad.py.)
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from corpus import LOSSES_WITH_CONSTANTS, WITH_CONSTANTS
from heterosymnn import FormulaParsingError, SymbolicJITCompiler, ToolchainNotFoundError, cache, config
from heterosymnn.codegen.c_runtime import CHUNK_ELEMENTS, SPAN_ELEMENTS
from heterosymnn.toolchains import find_toolchain

try:  # these tests build with the real compiler; without any, CPU_JIT cannot be tested here
    find_toolchain()
except ToolchainNotFoundError as _exc:
    pytest.skip(f"no usable C toolchain for CPU_JIT: {_exc}", allow_module_level=True)

REPO_ROOT = Path(__file__).resolve().parents[2]


def _compilers(configs, dtype, mode="activation"):
    """The same layer on one thread and on two (the thread count is read when it is built)."""
    result = []
    for threads in (1, 2):
        with config.override(num_threads=threads):
            result.append(SymbolicJITCompiler(configs, "CPU_JIT", mode=mode, dtype=dtype, strict=True))
    return result


def _grad(comp, a, b, **layout):
    constants_grad = np.full(len(comp.constant_names), np.nan)
    out = comp.backward_kernel(a, b, constants_grad=constants_grad, **layout)
    return out, constants_grad


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_same_bits_on_one_or_two_threads_and_every_call(dtype):
    serial, parallel = _compilers(WITH_CONSTANTS, dtype)
    rng = np.random.default_rng(0)
    cols = 3 * CHUNK_ELEMENTS + SPAN_ELEMENTS // 2 + 1  # several chunks per row, a short last span
    z = rng.normal(size=(len(WITH_CONSTANTS), cols)).astype(dtype)
    g = rng.normal(size=z.shape).astype(dtype)
    out, reference = _grad(serial, z, g)
    assert np.isfinite(reference).all()
    np.testing.assert_array_equal(out, serial.backward_kernel(z, g))
    for comp in (serial, parallel, parallel):
        again_out, again = _grad(comp, z, g)
        assert again.tobytes() == reference.tobytes()
        assert again_out.tobytes() == out.tobytes()


def test_a_sum_does_not_depend_on_the_batch_around_its_spans():
    """A row's sum is its spans' sums added in order: splitting a batch at span boundaries and
    adding the parts in the same order gives the same bits."""
    comp = SymbolicJITCompiler([("a*tanh(b*num)", {"a": 0.7, "b": 1.9})], "CPU_JIT", dtype="float64",
                               strict=True)
    rng = np.random.default_rng(1)
    z, g = rng.normal(size=(2, 1, 2 * SPAN_ELEMENTS))
    whole = _grad(comp, z, g)[1]
    first = _grad(comp, z[:, :SPAN_ELEMENTS].copy(), g[:, :SPAN_ELEMENTS].copy())[1]
    second = _grad(comp, z[:, SPAN_ELEMENTS:].copy(), g[:, SPAN_ELEMENTS:].copy())[1]
    assert whole.tobytes() == (first + second).tobytes()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_in_place(dtype):
    """``out`` may be ``z`` or ``grad``: the terms still see the inputs, not the results (a
    derivative that does not read ``num``, whose term does, let GCC read z[i] after out[i])."""
    configs = list(WITH_CONSTANTS) + [("k*num + c", {"k": 2.0, "c": 0.5})]
    comp = SymbolicJITCompiler(configs, "CPU_JIT", dtype=dtype, strict=True)
    rng = np.random.default_rng(3)
    z, g = rng.normal(size=(2, len(configs), 300)).astype(dtype)
    out, reference = _grad(comp, z, g)
    for target in ("z", "grad"):
        zz, gg = z.copy(), g.copy()
        into = zz if target == "z" else gg
        grad = np.zeros(len(comp.constant_names))
        assert comp.backward_kernel(zz, gg, into, constants_grad=grad) is into
        assert grad.tobytes() == reference.tobytes(), target
        assert into.tobytes() == out.tobytes(), target


def test_rows_without_constants_and_layers_without_any():
    mixed = SymbolicJITCompiler(["tanh", ("leaky_relu", {"alpha": 0.2}), "sin"], "CPU_JIT", strict=True)
    z = np.linspace(-2, 2, 3 * 50, dtype=np.float32).reshape(3, 50)
    out, grad = _grad(mixed, z, np.ones_like(z))
    np.testing.assert_array_equal(out, mixed.backward_kernel(z, np.ones_like(z)))
    assert grad.shape == (1,) and grad[0] == pytest.approx(float(np.minimum(z[1], 0).sum()), rel=1e-6)
    plain = SymbolicJITCompiler(["tanh", "sin"], "CPU_JIT", strict=True)
    out, grad = _grad(plain, z[:2], z[:2])
    assert grad.shape == (0,)
    np.testing.assert_array_equal(out, plain.backward_kernel(z[:2], z[:2]))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_losses_per_row_and_element_wise(dtype):
    rng = np.random.default_rng(2)
    rows = SymbolicJITCompiler(LOSSES_WITH_CONSTANTS, "CPU_JIT", mode="loss", dtype=dtype, strict=True)
    rows_ref = SymbolicJITCompiler(LOSSES_WITH_CONSTANTS, "CPU_PYTHON", mode="loss", dtype=dtype)
    y_pred, y_true = rng.normal(size=(2, len(LOSSES_WITH_CONSTANTS), 700)).astype(dtype)
    out, got = _grad(rows, y_pred, y_true)
    want = _grad(rows_ref, y_pred, y_true)[1]
    np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == "float32" else 1e-12)
    np.testing.assert_array_equal(out, rows.backward_kernel(y_pred, y_true))
    # One config: element-wise over any shape, every element in one sum.
    single = SymbolicJITCompiler([("huber", {"delta": 0.7})], "CPU_JIT", mode="loss", dtype=dtype, strict=True)
    ref = SymbolicJITCompiler([("huber", {"delta": 0.7})], "CPU_PYTHON", mode="loss", dtype=dtype)
    got, want = _grad(single, y_pred, y_true)[1], _grad(ref, y_pred, y_true)[1]
    np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == "float32" else 1e-12)
    assert _grad(single, y_pred.ravel(), y_true.ravel())[1].tobytes() == got.tobytes()


def test_a_structure_without_a_gradient_function_fails_only_when_asked(monkeypatch):
    from heterosymnn.symbolic.structure import Structure

    def no_derivative(self):
        raise FormulaParsingError("the derivative of p0*num with respect to one of its constants: test")

    monkeypatch.setattr(Structure, "constant_derivatives", property(no_derivative))
    comp = SymbolicJITCompiler(["tanh", ("k*num", {"k": 2.0})], "CPU_JIT", strict=True)
    z = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(comp.backward_kernel(z, z), [[1 - np.tanh(1.0) ** 2] * 4, [2.0] * 4], rtol=1e-6)
    with pytest.raises(FormulaParsingError, match=r"node 1: the derivative of p0\*num .*: test"):
        comp.backward_kernel(z, z, constants_grad=np.zeros(1))


WARM_CHILD = """
import json, numpy as np
from heterosymnn import SymbolicJITCompiler, cache
comp = SymbolicJITCompiler([("a*sin(w*num) + b", {"a": 1.5, "w": 3.0, "b": -0.25})], "CPU_JIT", strict=True)
grad = np.zeros(3)
comp.backward_kernel(np.full((1, 5), 0.5, np.float32), np.ones((1, 5), np.float32), constants_grad=grad)
print(json.dumps({"grad": grad.tolist(), "builds": cache.stats().as_dict()["builds"]}))
"""


def test_a_warm_start_finds_the_gradient_function(fresh_cache_dir):
    comp = SymbolicJITCompiler([("a*sin(w*num) + b", {"a": 1.5, "w": 3.0, "b": -0.25})], "CPU_JIT", strict=True)
    _grad(comp, np.ones((1, 3), np.float32), np.ones((1, 3), np.float32))  # builds the gradient function
    env = {**os.environ, "HETEROSYMNN_CACHE_DIR": str(fresh_cache_dir),
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", WARM_CHILD], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["builds"] == 0  # rerun once if generator files were being edited meanwhile
    np.testing.assert_allclose(result["grad"], [5 * np.sin(1.5), 5 * 1.5 * 0.5 * np.cos(1.5), 5.0], rtol=1e-6)
    assert cache.stats().as_dict()["builds"] >= 1


# -- the constants-gradient functions are built lazily ---------------------------------------

_FAMILIES = {"tanh": "a*tanh(b*num) + c", "atan": "a*atan(b*num) + c", "sinh": "a*sinh(b*num) + c",
             "cosh": "a*cosh(b*num) - c", "sin": "a*sin(b*num) - c"}


def _lazy(fn):
    """A layer of 4 nodes, 3 with constants, whose structures no other test uses (the structures
    are shared by every layer in the process, and their constant derivatives with them)."""
    return [(_FAMILIES[fn], {"a": 0.7, "b": 1.9, "c": 0.3}), "tanh", (f"k*{fn}(num)**2", {"k": 2.0}),
            (f"m*num*{fn}(num)", {"m": 1.25})]


LAZY = _lazy("tanh")


def _logged(cache_dir):
    lines = []
    for log in Path(cache_dir).rglob("builds.jsonl"):
        lines += [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [line for line in lines if "event" not in line]


def test_construction_builds_no_gradient_functions(fresh_cache_dir, monkeypatch):
    from heterosymnn.symbolic.structure import Structure

    derived = []
    original = Structure.__dict__["constant_derivatives"].func

    def counting(self):
        derived.append(self.key)
        return original(self)

    # Still a cached_property (the test below checks the instance dict too).
    import functools
    prop = functools.cached_property(counting)
    prop.__set_name__(Structure, "constant_derivatives")
    monkeypatch.setattr(Structure, "constant_derivatives", prop)
    cache.reset_stats()
    comp = SymbolicJITCompiler(LAZY, "CPU_JIT", strict=True)
    z = np.linspace(-1, 1, 4 * 10, dtype=np.float32).reshape(4, 10)
    comp.forward_kernel(z)
    comp.backward_kernel(z, np.ones_like(z))
    assert derived == []
    kinds = [line["kind"] for line in _logged(fresh_cache_dir)]
    assert "c-cgrad-module" not in kinds and "c-module" in kinds
    assert cache.stats().as_dict()["builds"] == kinds.count("c-module") + kinds.count("c-runtime")
    builds = cache.stats().as_dict()["builds"]

    out, grad = _grad(comp, z, np.ones_like(z))  # the first call asking builds them: one module
    assert len(derived) == len(set(derived)) == 3  # the structures with constants, once each
    kinds = [line["kind"] for line in _logged(fresh_cache_dir)]
    assert kinds.count("c-cgrad-module") == 1
    assert cache.stats().as_dict()["builds"] == builds + 1
    np.testing.assert_array_equal(out, comp.backward_kernel(z, np.ones_like(z)))
    assert np.isfinite(grad).all()

    # Later calls and a second compiler of the same (or an overlapping) layer: no build at all.
    again = _grad(comp, z, np.ones_like(z))[1]
    second = SymbolicJITCompiler(LAZY, "CPU_JIT", strict=True)
    assert _grad(second, z, np.ones_like(z))[1].tobytes() == grad.tobytes() == again.tobytes()
    subset = SymbolicJITCompiler(LAZY[2:], "CPU_JIT", strict=True)
    _grad(subset, z[2:], np.ones_like(z[2:]))
    assert cache.stats().as_dict()["builds"] == builds + 1
    assert [line["kind"] for line in _logged(fresh_cache_dir)].count("c-cgrad-module") == 1


def test_construction_leaves_constant_derivatives_uncomputed():
    from heterosymnn.codegen.c_source import render_c_module
    from heterosymnn.symbolic.layer import analyze

    configs = _lazy("atan")
    structures = [s for s in analyze(configs, "activation").structures if s.n_slots]
    assert len(structures) == 3
    assert not render_c_module(structures, "float32", constants_grad=False).constants_grad  # the backend's call
    assert all("constant_derivatives" not in s.__dict__ for s in structures)
    SymbolicJITCompiler(configs, "CPU_JIT", strict=True)  # the backend's default build
    assert all("constant_derivatives" not in s.__dict__ for s in structures)
    render_c_module(structures, "float32", rows=False)
    assert all("constant_derivatives" in s.__dict__ for s in structures)


def test_concurrent_first_calls_build_once(fresh_cache_dir):
    import threading

    comp = SymbolicJITCompiler(_lazy("sinh"), "CPU_JIT", dtype="float64", strict=True)
    z = np.linspace(-1, 1, 4 * 300).reshape(4, 300)
    results, errors = [], []

    def work():
        try:
            results.append(_grad(comp, z, np.ones_like(z))[1].tobytes())
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(set(results)) == 1
    assert [line["kind"] for line in _logged(fresh_cache_dir)].count("c-cgrad-module") == 1


NEW_PROCESS_CHILD = """
import json, numpy as np
from heterosymnn import SymbolicJITCompiler, cache
configs = json.loads(%r)
comp = SymbolicJITCompiler([tuple(c) if isinstance(c, list) else c for c in configs], "CPU_JIT", strict=True)
z = np.linspace(-1, 1, 4 * 10, dtype=np.float32).reshape(4, 10)
grad = np.zeros(len(comp.constant_names))
comp.backward_kernel(z, np.ones_like(z), constants_grad=grad)
import sys
print(json.dumps({"grad": grad.tolist(), "builds": cache.stats().as_dict()["builds"],
                  "sympy": "sympy" in sys.modules}))
"""


def test_a_new_process_reuses_the_gradient_module(fresh_cache_dir):
    configs = _lazy("cosh")
    comp = SymbolicJITCompiler(configs, "CPU_JIT", strict=True)
    z = np.linspace(-1, 1, 4 * 10, dtype=np.float32).reshape(4, 10)
    grad = _grad(comp, z, np.ones_like(z))[1]
    env = {**os.environ, "HETEROSYMNN_CACHE_DIR": str(fresh_cache_dir),
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", NEW_PROCESS_CHILD % json.dumps(configs)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["builds"] == 0  # rerun once if generator files were being edited meanwhile
    assert not result["sympy"]
    np.testing.assert_array_equal(result["grad"], grad)
