"""Cache stress: layer-building processes, ``clear`` and ``prune`` all at once on one cache.

The long version (32 processes) is ``benchmarks/cache_stress.py``; this one is
sized to finish in well under a minute on two cores.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from heterosymnn.cache import KernelCache
from heterosymnn.errors import ToolchainNotFoundError
from heterosymnn.toolchains import find_toolchain

import stress_worker
from cache_helpers import subprocess_env

try:  # real compiler runs; without a toolchain CPU_JIT cannot be stressed here
    find_toolchain()
except ToolchainNotFoundError as _exc:
    pytest.skip(f"no usable C toolchain for CPU_JIT: {_exc}", allow_module_level=True)


@pytest.mark.slow
def test_layers_clear_and_prune_together_never_fail_and_never_build_twice(cache_dir, tmp_path):
    # ROUNDS bounds the run; the time limit is only a backstop for a very slow machine.
    summary = stress_worker.run_stress(cache_dir, tmp_path, processes=6, rounds=5, seconds=240, pool=6,
                                       max_size="20K", seed=1)
    assert summary["failures"] == []
    assert summary["layers"] == 6 * 5
    # A module removed between its lookup and its loading is reported as unusable and
    # rebuilt (a CompilationWarning); nothing else may warn (strict mode raises on fallbacks).
    assert all(w.startswith("CompilationWarning: the kernel cache entry") for w in summary["warnings"])
    log = summary["log"]
    assert log["violations"] == []
    assert log["module_builds"] == log["compiler_runs_with_structures"] > 0  # every compiler run is attributed
    assert log["max_compiles_per_structure_per_epoch"] >= 1
    for run in summary["maintenance"]:
        assert run["errors"] == [] and run["runs"] >= 1
        # 1 only when an entry was skipped because its build was running: never a crash or a usage error.
        assert set(run["exit_codes"]) <= {"0", "1"} and (run["skipped"] > 0) == ("1" in run["exit_codes"])
    assert summary["leftovers"] == {"temp_dirs": [], "lock_files": [], "trash": []}


def _once(cache_dir: Path, indices: str) -> dict:
    done = subprocess.run([sys.executable, stress_worker.__file__, "once", indices], env=subprocess_env(cache_dir),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    [line] = [ln for ln in done.stdout.splitlines() if ln.startswith(stress_worker.RESULT_MARKER)]
    result = json.loads(line[len(stress_worker.RESULT_MARKER):])
    assert result["wrong"] == ""
    return result["stats"]


def test_a_structure_whose_module_was_pruned_is_compiled_once_not_in_every_layer(cache_dir):
    # Regression: prune removed a module but kept the structure's record pointing at
    # it; the record was never updated, so every later layer using the structure
    # compiled it again, in every process.
    assert _once(cache_dir, "0")["functions_built"] == 1
    cache = KernelCache(cache_dir)
    [module] = [e for e in cache.layout.iter_entries()
                if json.loads((e[1] / "meta.json").read_text()).get("kind") == "c-module"]
    cache.discard(cache.lookup(module[0]))  # what prune does to the least recently used module
    assert _once(cache_dir, "0,1")["functions_built"] == 2  # structure 0 again, as it must, with 1
    assert _once(cache_dir, "0")["functions_built"] == 0
    assert _once(cache_dir, "1,0")["functions_built"] == 0
