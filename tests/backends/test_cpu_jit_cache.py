"""CPU_JIT with the real compiler, real cffi modules and the real file-locked cache.

What is counted: compiler runs (``heterosymnn.cache.stats()`` deltas and the ``builds.jsonl``
log, one line per artifact built by any process). What is exercised: warm starts in new
processes, processes racing on a cold cache, a builder killed mid-build, damaged artifacts,
an unusable cache directory, broken toolchains and builds, threads, and pickling into
``spawn`` workers. Results are always checked against CPU_PYTHON.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List

import numpy as np
import pytest

import heterosymnn
from heterosymnn import (BackendUnavailableError, CompilationWarning, JITCompilationError, PerformanceWarning,
                         SymbolicJITCompiler, ToolchainNotFoundError, cache, config)
from heterosymnn.backends import cpu_modules
from heterosymnn.toolchains import clear_caches, find_toolchain

HERE = Path(__file__).resolve().parent

import cpu_jit_worker
from cpu_jit_worker import LAYERS, RESULT_MARKER, inputs

try:  # these tests build with the real compiler; without any, CPU_JIT cannot be tested here
    find_toolchain()
except ToolchainNotFoundError as _exc:
    pytest.skip(f"no usable C toolchain for CPU_JIT: {_exc}", allow_module_level=True)

REPO_ROOT = Path(heterosymnn.__file__).resolve().parent.parent
WORKER = HERE / "cpu_jit_worker.py"
TOL = {"float64": dict(rtol=1e-12, atol=1e-13), "float32": dict(rtol=1e-5, atol=1e-6)}


# -- helpers ---------------------------------------------------------------------------------------
def build_log() -> List[dict]:
    """Every line of the configured cache's build log."""
    path = cache.default_cache().layout.log
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@contextlib.contextmanager
def counting():
    """Yields a dict filled, on exit, with the stats delta and the new build-log lines."""
    result = {}
    before, lines = cache.stats().as_dict(), len(build_log())
    yield result
    after = cache.stats().as_dict()
    result.update({name: after[name] - before[name] for name in after})
    result["log"] = build_log()[lines:]


def check_against_python(configs, dtype, forward, backward, constants=None):
    """The given results are CPU_PYTHON's (NaN positions identical, values within tolerance)."""
    ref = SymbolicJITCompiler(configs, "CPU_PYTHON", dtype=dtype)
    for node, values in (constants or {}).items():
        ref.set_constants(node, **values)
    z, grad = inputs(len(configs), dtype)
    for got, expected in ((forward, ref.forward_kernel(z)), (backward, ref.backward_kernel(z, grad))):
        got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
        np.testing.assert_allclose(got, expected, equal_nan=True, **TOL[dtype])


def run_jit(configs, dtype="float64"):
    comp = SymbolicJITCompiler(configs, "CPU_JIT", dtype=dtype, strict=True)
    assert comp.calculation_method == "CPU_JIT"
    z, grad = inputs(len(configs), dtype)
    return comp, comp.forward_kernel(z), comp.backward_kernel(z, grad)


def worker_env(cache_dir) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["HETEROSYMNN_CACHE_DIR"] = str(cache_dir)
    return env


def start_worker(cache_dir, *args, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKER), *args], env=worker_env(cache_dir), cwd=str(HERE),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def result_of(proc: subprocess.Popen, timeout: float = 120) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"worker failed ({proc.returncode}):\n{out}\n{err}"
    line = [ln for ln in out.splitlines() if ln.startswith(RESULT_MARKER)][-1]
    return json.loads(line[len(RESULT_MARKER):])


def entries_of_kind(kind: str) -> List[Path]:
    """Entry directories of the configured cache whose builder said ``kind``."""
    found = []
    for meta in sorted(cache.default_cache().layout.entries.glob("*/*/meta.json")):
        if json.loads(meta.read_text()).get("kind") == kind:
            found.append(meta.parent)
    return found


# -- build counts: a module cache that already knows one layer --------------------------------------
BASE = LAYERS["eight"]


@pytest.fixture(scope="module")
def warm_dir(tmp_path_factory):
    """A cache that has built BASE (float64) once."""
    directory = tmp_path_factory.mktemp("cpu_jit_warm")
    with config.override(cache_dir=str(directory), lock_timeout=60.0):
        run_jit(BASE)
    return directory


@pytest.fixture
def warm(warm_dir):
    with config.override(cache_dir=str(warm_dir), lock_timeout=60.0):
        yield warm_dir


def test_same_layer_again_builds_nothing(warm):
    with counting() as delta:
        _, fwd, bwd = run_jit(BASE)
    assert delta["builds"] == 0 and delta["functions_built"] == 0 and delta["log"] == []
    check_against_python(BASE, "float64", fwd, bwd)


def test_same_structures_with_other_constants_build_nothing(warm):
    other = [(cfg[0], {k: v * 1.5 + 0.25 for k, v in cfg[1].items()}) if isinstance(cfg, tuple) else cfg
             for cfg in BASE]
    assert other != BASE
    with counting() as delta:
        comp, fwd, bwd = run_jit(other)
    assert delta["builds"] == 0 and delta["log"] == []
    assert comp.n_structures == 8
    check_against_python(other, "float64", fwd, bwd)


def test_one_new_structure_builds_exactly_that_function(warm):
    layer = BASE + ["cosh(num/7) - num"]
    with counting() as delta:
        comp, fwd, bwd = run_jit(layer)
    assert comp.n_structures == 9
    assert delta["builds"] == 1 and delta["functions_built"] == 1
    [line] = delta["log"]
    assert line["kind"] == "c-module" and line["functions"] == 1 and line["pid"] == os.getpid()
    assert {"key", "pid", "functions", "seconds", "toolchain"} <= set(line)
    check_against_python(layer, "float64", fwd, bwd)


def test_set_constants_builds_nothing_and_changes_results(warm):
    comp, fwd, _ = run_jit(BASE)
    node = 1  # ("a*sin(w*num)", {...})
    z, grad = inputs(len(BASE), "float64")
    with counting() as delta:
        comp.set_constants(node, a=-3.0, w=0.75)
        changed = comp.forward_kernel(z)
        changed_bwd = comp.backward_kernel(z, grad)
    assert delta["builds"] == 0 and delta["log"] == []
    assert comp.constants[node] == {"a": -3.0, "w": 0.75}
    assert not np.allclose(changed[node], fwd[node], equal_nan=True)
    np.testing.assert_array_equal(np.delete(changed, node, 0), np.delete(fwd, node, 0))
    check_against_python(BASE, "float64", changed, changed_bwd, constants={node: {"a": -3.0, "w": 0.75}})


def test_ten_new_structures_build_in_one_compiler_run_per_core(warm):
    new = [f"atan(num)**{k} + num" for k in range(2, 12)]
    layer = BASE[:4] + new + BASE[4:8]
    with config.override(build_jobs=1), counting() as delta:
        comp, fwd, bwd = run_jit(layer)
    assert comp.n_structures == 18
    # On one core, one compiler run for up to 24 new functions (cpu_modules.FUNCTIONS_PER_BUILD).
    assert delta["builds"] == 1 and delta["functions_built"] == 10
    assert [(line["kind"], line["functions"]) for line in delta["log"]] == [("c-module", 10)]
    check_against_python(layer, "float64", fwd, bwd)


def test_new_structures_are_shared_out_over_the_cores(warm):
    new = [f"atan(num)**{k} + {k}*num" for k in range(2, 11)]
    with config.override(build_jobs=2), counting() as delta:
        comp, fwd, bwd = run_jit(BASE[:2] + new)
    # 9 new functions on two cores: two compiler runs in parallel, every function built once.
    assert sorted(line["functions"] for line in delta["log"]) == [4, 5]
    assert delta["functions_built"] == 9
    check_against_python(BASE[:2] + new, "float64", fwd, bwd)


@pytest.mark.parametrize("functions, cores, runs", [
    (1, 16, 1), (7, 2, 1), (8, 2, 2), (8, 1, 1), (10, 16, 2), (24, 1, 1), (25, 1, 2),
    (48, 2, 2), (49, 2, 3), (100, 16, 16)])
def test_compiler_runs(functions, cores, runs):
    assert cpu_modules.compiler_runs(functions, cores) == runs


def test_a_new_dtype_builds_its_runtime_and_functions_once(warm):
    with counting() as delta:
        run_jit(BASE, "float32")
        _, fwd, bwd = run_jit(BASE[:5], "float32")
    kinds = sorted((line["kind"], line["functions"]) for line in delta["log"])
    assert kinds == [("c-module", 8), ("c-runtime", 0)]
    check_against_python(BASE[:5], "float32", fwd, bwd)


# -- other processes --------------------------------------------------------------------------------
def test_warm_start_in_a_new_process_needs_no_sympy_and_no_build(fresh_cache_dir):
    run_jit(LAYERS["small"])  # warms the cache
    lines = len(build_log())
    result = result_of(start_worker(fresh_cache_dir, "run", "small", "float64"))
    assert result["method"] == "CPU_JIT"
    assert result["sympy_imported"] is False
    assert result["build_only_imported"] == []  # no detectors, compiler driver or SymPy on the warm path
    assert result["stats"]["builds"] == 0 and result["stats"]["functions_built"] == 0
    assert result["warnings"] == []
    assert len(build_log()) == lines
    check_against_python(LAYERS["small"], "float64", result["forward"], result["backward"])


N_RACERS = 6


def test_processes_racing_on_a_cold_cache_build_each_structure_once(fresh_cache_dir, tmp_path):
    ready, go = tmp_path / "ready", tmp_path / "go"
    ready.mkdir()
    procs = [start_worker(fresh_cache_dir, "race", "eight", "float32", str(ready), str(go))
             for _ in range(N_RACERS)]
    try:
        deadline = time.monotonic() + 120
        while len(list(ready.iterdir())) < N_RACERS:
            assert all(p.poll() is None for p in procs), "a worker died before the start"
            assert time.monotonic() < deadline, "workers never got ready"
            time.sleep(0.01)
        go.touch()  # all start constructing at once
        results = [result_of(p) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    log = build_log()
    modules = [line for line in log if line["kind"] == "c-module"]
    runtimes = [line for line in log if line["kind"] == "c-runtime"]
    assert sum(line["functions"] for line in modules) == 8, modules  # every structure compiled once in all
    assert len(runtimes) == 1, runtimes  # one dtype: one runtime
    assert sum(r["stats"]["functions_built"] for r in results) == 8
    assert {line["pid"] for line in log} <= {r["pid"] for r in results}
    for r in results:
        assert r["method"] == "CPU_JIT"
        check_against_python(LAYERS["eight"], "float32", r["forward"], r["backward"])


def test_a_builder_killed_mid_build_leaves_nothing_that_is_used(fresh_cache_dir):
    root = cache.default_cache().root
    proc = start_worker(fresh_cache_dir, "run", "kill", "float64", start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        # cffi writes the module's C file into the private build directory, then runs the compiler.
        while not list(root.glob("tmp/*/build/_hsnn_rows_*.c")):
            assert proc.poll() is None, f"the worker finished before it could be killed: {proc.communicate()}"
            assert time.monotonic() < deadline, "the worker never started building"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        assert not [line for line in build_log() if line["kind"] == "c-module"]

        with counting() as delta:
            _, fwd, bwd = run_jit(LAYERS["kill"])
        [module_line] = [line for line in delta["log"] if line["kind"] == "c-module"]
        assert module_line["pid"] == os.getpid() and module_line["functions"] == 4
        [entry] = entries_of_kind("c-module")
        assert json.loads((entry / "meta.json").read_text())["pid"] == os.getpid()
        check_against_python(LAYERS["kill"], "float64", fwd, bwd)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the killed builder's compiler child, if still running


def _truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _flip(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 64]) + data[middle + 64:]


def _garbage(data: bytes) -> bytes:
    return data[: len(data) // 3]  # meta.json cut mid-way: not JSON any more


def _replace_file(path: Path, data: bytes) -> None:
    # A new file over the old name: this process keeps its loaded (mapped) copy intact.
    replacement = path.with_name("replacement.tmp")
    replacement.write_bytes(data)
    os.replace(replacement, path)


@pytest.mark.parametrize("kind, target, damage, functions", [
    ("c-module", "artifact", _truncate, 3),
    ("c-module", "artifact", _flip, 3),
    ("c-module", "meta.json", _garbage, 3),
    ("c-runtime", "artifact", _truncate, 0),
], ids=["module-truncated", "module-same-size-corruption", "module-meta-cut", "runtime-truncated"])
def test_a_damaged_entry_is_rebuilt_by_the_next_process(fresh_cache_dir, kind, target, damage, functions):
    run_jit(LAYERS["small"])
    [entry] = entries_of_kind(kind)
    name = json.loads((entry / "meta.json").read_text())["artifact"] if target == "artifact" else target
    _replace_file(entry / name, damage((entry / name).read_bytes()))

    result = result_of(start_worker(fresh_cache_dir, "run", "small", "float64"))
    rebuilt = [message for category, message in result["warnings"]
               if category == CompilationWarning.__name__ and "rebuilt" in message]
    assert rebuilt, result["warnings"]
    assert str(entry) in rebuilt[0]
    # Only the damaged entry is built again.
    assert result["stats"]["builds"] == 1 and result["stats"]["functions_built"] == functions
    [line] = [line for line in build_log() if line["pid"] == result["pid"]]
    assert line["kind"] == kind
    check_against_python(LAYERS["small"], "float64", result["forward"], result["backward"])
    assert json.loads((entry / "meta.json").read_text())["pid"] == result["pid"]


# -- an unusable cache, broken toolchains, broken builds ---------------------------------------------
@pytest.mark.parametrize("how", ["below-a-file", "read-only"])
def test_an_unusable_cache_dir_falls_back_with_a_warning(tmp_path, how):
    if how == "below-a-file":
        blocker = tmp_path / "a-file"
        blocker.write_text("not a directory")
        unusable = blocker / "cache"
    else:
        if os.name != "posix" or os.geteuid() == 0:
            pytest.skip("permissions do not stop root (or are not POSIX modes here)")
        unusable = tmp_path / "read-only"
        unusable.mkdir(mode=0o555)
    with config.override(cache_dir=str(unusable)):
        with pytest.warns(PerformanceWarning) as caught:
            _, fwd, bwd = run_jit(LAYERS["small"])
    messages = [str(w.message) for w in caught if issubclass(w.category, PerformanceWarning)]
    assert any(str(unusable) in m and "HETEROSYMNN_CACHE_DIR" in m for m in messages), messages
    check_against_python(LAYERS["small"], "float64", fwd, bwd)
    assert not unusable.exists() or list(unusable.iterdir()) == []


@pytest.fixture
def failing_cc(tmp_path):
    script = tmp_path / "broken-cc"
    script.write_text("#!/bin/sh\necho 'broken-cc: cannot compile anything' >&2\nexit 1\n")
    script.chmod(0o755)
    return str(script)


@pytest.fixture(params=["/bin/false", "script"])
def broken_cc(request, failing_cc):
    cc = failing_cc if request.param == "script" else request.param
    if not os.access(cc, os.X_OK):
        pytest.skip(f"{cc} is not available here")
    clear_caches()
    with config.override(cc=cc, strict=False):
        yield cc
    clear_caches()


def test_a_broken_toolchain_falls_back_to_cpu_python_with_a_warning(broken_cc):
    configs = LAYERS["small"]
    with pytest.warns(PerformanceWarning) as caught:
        comp = SymbolicJITCompiler(configs, "CPU_JIT", dtype="float64")
    assert comp.calculation_method == "CPU_PYTHON"
    [message] = [str(w.message) for w in caught if issubclass(w.category, PerformanceWarning)]
    assert "CPU_JIT" in message and "CPU_PYTHON" in message
    assert broken_cc in message and "HETEROSYMNN_CC" in message  # the problem
    assert "unset" in message or "install" in message  # and a fix
    z, grad = inputs(len(configs), "float64")
    check_against_python(configs, "float64", comp.forward_kernel(z), comp.backward_kernel(z, grad))


def test_a_broken_toolchain_raises_in_strict_mode(broken_cc):
    with pytest.raises(BackendUnavailableError) as info:
        SymbolicJITCompiler(LAYERS["small"], "CPU_JIT", dtype="float64", strict=True)
    assert isinstance(info.value, ToolchainNotFoundError)
    assert broken_cc in str(info.value)
    assert cache.stats().builds == 0


@pytest.fixture
def broken_source(monkeypatch):
    """Generated C with a syntax error appended (the front end never lets one through)."""
    from heterosymnn.codegen import c_source

    real = c_source.render_c_module

    def render(structures, dtype, **options):
        module = real(structures, dtype, **options)
        return dataclasses.replace(module, source=module.source + "\nint broken_by_the_test = ;\n")

    monkeypatch.setattr(c_source, "render_c_module", render)


def _check_failed_build_left_nothing():
    assert not entries_of_kind("c-module")
    assert not [line for line in build_log() if line["kind"] == "c-module"]
    assert not list(cache.default_cache().layout.tmp.iterdir())


def test_a_failing_build_raises_jit_compilation_error_in_strict_mode(broken_source):
    with pytest.raises(BackendUnavailableError) as info:
        SymbolicJITCompiler(LAYERS["small"], "CPU_JIT", dtype="float64", strict=True)
    error = info.value.__cause__
    assert isinstance(error, JITCompilationError), repr(info.value)
    assert "error" in error.compiler_output and "error" in str(info.value)  # gcc's own words
    assert error.source_path and error.source_path in str(info.value)
    kept = Path(error.source_path)
    assert kept.is_file() and "int broken_by_the_test = ;" in kept.read_text()
    _check_failed_build_left_nothing()


def test_a_failing_build_falls_back_to_cpu_python(broken_source):
    configs = LAYERS["small"]
    with config.override(strict=False), pytest.warns(PerformanceWarning) as caught:
        comp = SymbolicJITCompiler(configs, "CPU_JIT", dtype="float64")
    assert comp.calculation_method == "CPU_PYTHON"
    [message] = [str(w.message) for w in caught if issubclass(w.category, PerformanceWarning)]
    assert "CPU_JIT" in message and "compiler failed" in message and "Generated source kept at" in message
    z, grad = inputs(len(configs), "float64")
    check_against_python(configs, "float64", comp.forward_kernel(z), comp.backward_kernel(z, grad))
    _check_failed_build_left_nothing()


# -- isolation: cwd, environment, threads -----------------------------------------------------------
def test_a_cold_build_leaves_cwd_and_environment_unchanged(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cwd, environ = os.getcwd(), dict(os.environ)
    with counting() as delta:
        _, fwd, bwd = run_jit(LAYERS["small"])
    assert delta["builds"] == 2  # the runtime and the row functions: really cold
    assert os.getcwd() == cwd
    assert dict(os.environ) == environ
    assert list(tmp_path.iterdir()) == []  # nothing written into the caller's directory
    check_against_python(LAYERS["small"], "float64", fwd, bwd)


def test_two_threads_building_different_new_layers_at_once(fresh_cache_dir):
    shared = ("q*num**2 + sin(num)", {"q": 0.5})
    layers = [["relu", shared, "cosh(num/5)"], ["tanh", shared, ("k*atan(num)", {"k": 2.0})]]
    barrier = threading.Barrier(len(layers))
    outcomes = [None] * len(layers)
    cwd, environ = os.getcwd(), dict(os.environ)

    def construct(i):
        try:
            barrier.wait(timeout=30)
            outcomes[i] = run_jit(layers[i])
        except BaseException as exc:  # reported below
            outcomes[i] = exc

    threads = [threading.Thread(target=construct, args=(i,)) for i in range(len(layers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for outcome in outcomes:
        assert isinstance(outcome, tuple), f"a thread failed: {outcome!r}"
    for layer, (_, fwd, bwd) in zip(layers, outcomes):
        check_against_python(layer, "float64", fwd, bwd)
    log = build_log()
    assert sum(line["functions"] for line in log if line["kind"] == "c-module") == 5  # shared one once
    assert len([line for line in log if line["kind"] == "c-runtime"]) == 1
    assert os.getcwd() == cwd and dict(os.environ) == environ


# -- pickling into spawn workers ----------------------------------------------------------------------
def test_pickled_compiler_runs_in_spawn_workers_without_building(fresh_cache_dir, monkeypatch):
    configs = LAYERS["small"]
    comp, _, _ = run_jit(configs)
    comp.set_constants(1, a=3.0, w=-1.25)
    z, grad = inputs(len(configs), "float64")
    expected_fwd, expected_bwd = comp.forward_kernel(z), comp.backward_kernel(z, grad)
    lines = len(build_log())
    # spawn children do not see config.override(): they get the cache through the environment.
    monkeypatch.setenv("HETEROSYMNN_CACHE_DIR", str(fresh_cache_dir))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
        results = list(pool.map(cpu_jit_worker.apply_pickled, [comp] * 4, [z] * 4, [grad] * 4))
    for r in results:
        assert r["pid"] != os.getpid()
        assert r["method"] == "CPU_JIT"
        assert r["constants"] == comp.constants and r["constants"][1] == {"a": 3.0, "w": -1.25, "b": -0.25}
        np.testing.assert_array_equal(r["forward"], expected_fwd)
        np.testing.assert_array_equal(r["backward"], expected_bwd)
        assert r["stats"]["builds"] == 0 and r["stats"]["functions_built"] == 0
        assert r["sympy_imported"] is False
    assert len(build_log()) == lines
    check_against_python(configs, "float64", expected_fwd, expected_bwd, constants={1: {"a": 3.0, "w": -1.25}})
