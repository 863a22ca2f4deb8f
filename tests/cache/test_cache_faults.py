"""Faults during and after real CPU_JIT builds: killed builders, full disks, damaged files,
a cache deleted under a running process, read-only and impossible cache directories.

After every fault the next use, in this process and in a new one, must work, give CPU_PYTHON's
results, leave every published entry sound (its ``meta.json`` and checksums verify) and say in a
heterosymnn warning what was lost or which directory could not be used. Faults at a given build
step come from ``fault_worker.inject``, which wraps the library's step functions from outside.

Real full and read-only filesystems need ``mount`` (tmpfs, read-only bind mounts), which root has
here; elsewhere those tests skip and the injected ``ENOSPC`` faults still cover the behaviour.
Note that permission bits cannot make a directory read-only for root: only a read-only mount can.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path
from typing import Iterator, List

import numpy as np
import pytest

from heterosymnn import (BackendUnavailableError, CompilationWarning, PerformanceWarning, SymbolicJITCompiler,
                         ToolchainNotFoundError, cache, config)
from heterosymnn.cache import buildlog
from heterosymnn.cache.entry import verify
from heterosymnn.cache.layout import Layout
from heterosymnn.toolchains import find_toolchain

import fault_worker
from cache_helpers import subprocess_env, wait_for_file
from fault_worker import LAYERS, RESULT_MARKER, STEPS, inputs

try:
    find_toolchain()
except ToolchainNotFoundError as _exc:
    pytest.skip(f"no usable C toolchain for CPU_JIT: {_exc}", allow_module_level=True)

WORKER = Path(fault_worker.__file__)
PAIR = LAYERS["pair"]


# -- helpers ---------------------------------------------------------------------------------------
def worker(cache_dir: Path, layer: str = "pair", *fault: str) -> subprocess.Popen:
    env = subprocess_env(cache_dir, HETEROSYMNN_LOCK_TIMEOUT="30")  # a lock never released fails, not hangs
    return subprocess.Popen([sys.executable, str(WORKER), layer, *fault], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def result_of(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, f"worker failed ({proc.returncode}):\n{out}\n{err}"
    line = [ln for ln in out.splitlines() if ln.startswith(RESULT_MARKER)][-1]
    return json.loads(line[len(RESULT_MARKER):])


def run_here(layer: str = "pair", strict: bool = True) -> SymbolicJITCompiler:
    comp = SymbolicJITCompiler(LAYERS[layer], "CPU_JIT", dtype="float64", strict=strict)
    z, grad = inputs(len(LAYERS[layer]))
    check_results(layer, comp.forward_kernel(z), comp.backward_kernel(z, grad))
    return comp


def check_results(layer: str, forward, backward) -> None:
    """``forward``/``backward`` on :func:`inputs` are CPU_PYTHON's (NumPy evaluation)."""
    ref = SymbolicJITCompiler(LAYERS[layer], "CPU_PYTHON", dtype="float64")
    z, grad = inputs(len(LAYERS[layer]))
    for got, expected in ((forward, ref.forward_kernel(z)), (backward, ref.backward_kernel(z, grad))):
        got = np.asarray(got, np.float64)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-13, equal_nan=True)


def check_worker(result: dict, layer: str = "pair", functions_built: int = 0, warned: bool = False) -> None:
    assert result["method"] == "CPU_JIT"
    assert result["stats"]["functions_built"] == functions_built, result["stats"]
    assert bool(result["warnings"]) == warned, result["warnings"]
    check_results(layer, result["forward"], result["backward"])


def assert_sound(base: Path, tmp_empty: bool = True) -> None:
    """Every published entry under ``base`` verifies; no build directory is left behind."""
    layout = Layout(base)
    for key, path in layout.iter_entries():
        meta, reason = verify(path, key)
        assert meta is not None, f"a published entry is broken: {path}: {reason}"
    if tmp_empty and layout.tmp.exists():
        assert os.listdir(layout.tmp) == []


def entries_of_kind(base: Path, kind: str) -> List[Path]:
    """Sound entries of one kind: c-runtime, c-module, layer-plan or c-structure (a record)."""
    found = []
    for key, path in Layout(base).iter_entries():
        meta, _ = verify(path, key)
        if meta is not None and meta.get("kind", "c-structure" if "forward" in meta else None) == kind:
            found.append(path)
    return sorted(found)


def fallback_messages(caught, configured: Path) -> List[str]:
    return [str(w.message) for w in caught
            if issubclass(w.category, PerformanceWarning) and str(configured) in str(w.message)]


@pytest.fixture(scope="module")
def runtime_template(tmp_path_factory) -> Path:
    """A cache holding the float64 runtime module (and the detected toolchain): tests copy it,
    so that each builds only the row functions its faults are about."""
    directory = tmp_path_factory.mktemp("runtime_template")
    with config.override(cache_dir=str(directory)):
        SymbolicJITCompiler(["tanh"], "CPU_JIT", dtype="float64", strict=True)
    for _, path in Layout(directory).iter_entries():
        if path not in entries_of_kind(directory, "c-runtime"):
            shutil.rmtree(path)
    Layout(directory).log.unlink()
    return directory


@pytest.fixture
def seeded(fresh_cache_dir, runtime_template) -> Path:
    """This test's (configured) cache directory, holding the runtime module."""
    shutil.copytree(runtime_template, fresh_cache_dir, dirs_exist_ok=True)
    return fresh_cache_dir


# -- a builder killed at each step -----------------------------------------------------------------
def _wait_until_gone(pid: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.01)
    raise AssertionError(f"the orphaned compiler {pid} never finished")


@pytest.mark.parametrize("step", STEPS)
def test_a_builder_killed_at_each_step_leaves_nothing_half_built(seeded, tmp_path, step):
    proc = worker(seeded, "pair", step, "pause", str(tmp_path))
    try:
        wait_for_file(tmp_path / step, proc)
        proc.send_signal(signal.SIGKILL)  # the builder only: at "compiler" its compiler runs on, orphaned
        proc.communicate(timeout=30)
        if step == "compiler":
            _wait_until_gone(int((tmp_path / step).read_text()))  # it finishes into a directory nobody publishes
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert_sound(seeded, tmp_empty=False)
    published = entries_of_kind(seeded, "c-module")
    assert len(published) == (1 if step == "publish" else 0)

    # A new process: the dead builder's locks are free, nothing it left is trusted, nothing
    # published was lost (so nothing to warn about), and only what is missing is built.
    result = result_of(worker(seeded))
    check_worker(result, functions_built=0 if step == "publish" else 2)
    assert_sound(seeded)  # the killed build's directory was removed under the key's lock
    if step == "publish":
        assert entries_of_kind(seeded, "c-module") == published  # used as it was
    # And this process, after both.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_here()
    assert cache.stats().functions_built == 0


# -- a full disk at each step ----------------------------------------------------------------------
@pytest.mark.parametrize("step", STEPS)
def test_a_full_disk_at_each_step_falls_back_with_a_warning(seeded, monkeypatch, step):
    fault_worker.inject(step, "enospc", only_under=seeded, setattr=monkeypatch.setattr)
    with pytest.warns(PerformanceWarning) as caught:
        comp = run_here()
    [message] = fallback_messages(caught, seeded)
    assert "ENOSPC" in message and "free some space" in message and "HETEROSYMNN_CACHE_DIR" in message
    assert comp.calculation_method == "CPU_JIT"
    assert cache.default_cache().is_fallback
    assert entries_of_kind(seeded, "c-module") == []  # nothing half-written was published
    assert_sound(seeded)

    # The same process goes on in its fallback cache without repeating the warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_here("pair+1")
    # A new process, with the disk no longer full, builds in the configured directory.
    monkeypatch.undo()
    check_worker(result_of(worker(seeded)), functions_built=2)
    assert len(entries_of_kind(seeded, "c-module")) == 1
    assert_sound(seeded)


@pytest.mark.parametrize("strict", [False, True], ids=["falls-back", "strict"])
def test_a_disk_full_everywhere_names_the_disk_and_the_fix(seeded, monkeypatch, strict):
    # The private temporary cache lives on a full disk too: nowhere to keep a module.
    fault_worker.inject("compiler", "enospc", only_under=None, setattr=monkeypatch.setattr)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if strict:
            with pytest.raises(BackendUnavailableError) as info:
                run_here(strict=True)
            message = str(info.value)
        else:
            comp = SymbolicJITCompiler(PAIR, "CPU_JIT", dtype="float64")
            assert comp.calculation_method == "CPU_PYTHON"
            z, grad = inputs(len(PAIR))
            check_results("pair", comp.forward_kernel(z), comp.backward_kernel(z, grad))
            [message] = [str(w.message) for w in caught if "falling back to CPU_PYTHON" in str(w.message)]
    assert "temporary kernel cache" in message and "No space left on device" in message
    assert "free some space" in message and "HETEROSYMNN_CACHE_DIR" in message
    assert "Traceback" not in message and "Unusable" not in message
    assert fallback_messages(caught, seeded)  # the first move, away from the configured directory
    assert_sound(seeded)


@contextlib.contextmanager
def mounted(target: Path, *commands: List[str]) -> Iterator[Path]:
    """Run ``mount COMMAND target`` for each command; skip where mounting is not allowed.

    Unmounted lazily afterwards: this process may still have libraries loaded from there.
    """
    target.mkdir(parents=True, exist_ok=True)
    if os.name != "posix" or shutil.which("mount") is None:
        pytest.skip("no mount command here")
    mounts = 0
    try:
        for options in commands:
            done = subprocess.run(["mount", *options, str(target)], capture_output=True, text=True)
            if done.returncode != 0:
                pytest.skip(f"cannot mount here (needs root or mount rights): {done.stderr.strip()}")
            mounts += options[0] != "-o"  # a remount adds no mount
        yield target
    finally:
        for _ in range(mounts):
            subprocess.run(["umount", "-l", str(target)], capture_output=True)


def read_only(path: Path) -> contextlib.AbstractContextManager:
    """``path`` as a read-only bind mount of itself."""
    return mounted(path, ["--bind", str(path)], ["-o", "remount,ro,bind"])


@pytest.mark.parametrize("free_kib", [0, 24, 96], ids=["no-room", "room-for-the-plan", "room-for-the-runtime"])
def test_a_really_full_disk_falls_back_and_recovers(tmp_path, free_kib):
    # 0 KiB: even the probe write fails. 24 KiB: the layer plan fits, cffi cannot write the
    # runtime's C file. 96 KiB: the runtime fits, the assembler cannot write the row functions.
    with mounted(tmp_path / "disk", ["-t", "tmpfs", "-o", "size=1m", "tmpfs"]) as disk:
        filler = disk / "filler"
        stat = os.statvfs(disk)
        filler.write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - free_kib * 1024))
        configured = disk / "cache"
        with config.override(cache_dir=str(configured)):
            with pytest.warns(PerformanceWarning) as caught:
                comp = run_here()
            [message] = fallback_messages(caught, configured)
            assert "ENOSPC" in message and "No space left on device" in message and "free some space" in message
            assert comp.calculation_method == "CPU_JIT"
            assert_sound(configured)
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                run_here("pair+1")  # the same process carries on, warned once
            # A new process, once there is room, uses the directory again, silently.
            filler.unlink()
            check_worker(result_of(worker(configured)), functions_built=2)
            assert len(entries_of_kind(configured, "c-module")) == 1
            assert_sound(configured)


# -- damaged files ---------------------------------------------------------------------------------
def _cut(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _garbage(data: bytes) -> bytes:
    return os.urandom(len(data))


def _file_of_kind(base: Path, kind: str, name: str) -> Path:
    path = entries_of_kind(base, kind)[0]
    if name == "artifact":
        name = json.loads((path / "meta.json").read_text())["artifact"]
    return path / name


def _rewrite(path: Path, data: bytes) -> None:
    # A new file under the old name: a library this process has loaded keeps its mapped pages.
    replacement = path.with_name(f".{uuid.uuid4().hex}")
    replacement.write_bytes(data)
    os.replace(replacement, path)


def _rename_a_function(data: bytes) -> bytes:
    meta = json.loads(data)
    meta["forward"] += "_gone"  # still valid JSON: only the C lookup can tell
    return json.dumps(meta).encode()


def _change_a_default(data: bytes) -> bytes:
    plan = json.loads(data)
    plan["node_slot_names"][0] = ["bogus"]  # valid JSON, wrong plan: only the checksum can tell
    plan["node_defaults"][0] = [3.0]
    return json.dumps(plan).encode()


# Damaged modules (cut, flipped, meta.json cut) are covered in tests/backends/test_cpu_jit_cache.py.
ENTRY_DAMAGE = {
    "module-so-garbage": ("c-module", "artifact", _garbage),
    "record-meta-garbage": ("c-structure", "meta.json", _garbage),
    "record-names-missing-function": ("c-structure", "meta.json", _rename_a_function),
    "plan-cut": ("layer-plan", "plan.json", _cut),
    "plan-valid-json-wrong-values": ("layer-plan", "plan.json", _change_a_default),
}


@pytest.mark.parametrize("what", list(ENTRY_DAMAGE))
def test_a_damaged_entry_is_reported_and_rebuilt(seeded, what):
    kind, name, damage = ENTRY_DAMAGE[what]
    run_here()
    target = _file_of_kind(seeded, kind, name)
    _rewrite(target, damage(target.read_bytes()))

    # A new process: told which entry could not be used, and that it is rebuilt.
    result = result_of(worker(seeded))
    assert result["method"] == "CPU_JIT"
    check_results("pair", result["forward"], result["backward"])
    reported = [m for c, m in result["warnings"] if c == CompilationWarning.__name__ and "rebuilt" in m]
    assert reported and str(target.parent) in reported[0], result["warnings"]
    # A lost record loses where its function lives: that one function is compiled again.
    assert result["stats"]["functions_built"] == {"c-module": 2, "c-structure": 1, "layer-plan": 0}[kind]
    assert_sound(seeded)
    # This process (which built the entry before it was damaged) keeps working too.
    run_here()
    run_here("pair+1")


def test_damaged_entries_in_this_process_are_checked_again(seeded):
    # The process that built the layer knows its entries; one rewritten on disk since
    # (here the plan, valid JSON with wrong values) must not be trusted from memory.
    run_here()
    target = _file_of_kind(seeded, "layer-plan", "plan.json")
    _rewrite(target, _change_a_default(target.read_bytes()))
    with pytest.warns(CompilationWarning, match="rebuilt") as caught:
        comp = run_here()
    assert str(target.parent) in str(caught[0].message)
    assert comp.constants == [{}, {"k": 0.5}]
    assert_sound(seeded)


def test_a_torn_build_log_keeps_later_lines(seeded):
    run_here()
    log = Layout(seeded).log
    before = buildlog.read(log)
    with open(log, "ab") as stream:
        stream.write(b'{"key": "cut by a kill')  # a line a dying writer left without its end
    check_worker(result_of(worker(seeded, "pair+1")), layer="pair+1", functions_built=1)
    after = buildlog.read(log)
    assert after[:len(before)] == before and len(after) == len(before) + 1
    assert after[-1]["kind"] == "c-module" and after[-1]["functions"] == 1


def _wrong_shape(data: bytes) -> bytes:
    [fingerprint] = json.loads(data)
    return json.dumps({fingerprint: ["abc"]}).encode()  # right key, a value that is no toolchain


@pytest.mark.parametrize("damage", [_garbage, _wrong_shape], ids=["garbage", "wrong-shape"])
def test_a_damaged_toolchain_record_is_detected_again(seeded, damage):
    record = Layout(seeded).root / "toolchain.json"
    record.write_bytes(damage(record.read_bytes()))
    check_worker(result_of(worker(seeded)), functions_built=2)
    stored = json.loads(record.read_text())  # rewritten whole
    [(_, toolchain)] = stored.items()
    assert toolchain["name"] == find_toolchain().name and isinstance(toolchain["compile_args"], list)
    assert_sound(seeded)


# -- the cache deleted under a running process -----------------------------------------------------
@pytest.mark.parametrize("when", ["between-constructions", "before-a-call"])
def test_the_cache_deleted_under_a_running_process(seeded, when):
    comp = run_here()
    shutil.rmtree(seeded)
    if when == "before-a-call":
        z, grad = inputs(len(PAIR))  # the loaded modules stay mapped: calls go on working
        check_results("pair", comp.forward_kernel(z), comp.backward_kernel(z, grad))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing this process uses was lost
        run_here()
        run_here("pair+1")  # a new function, built into a re-created directory
    assert_sound(seeded)
    if when == "before-a-call":
        return  # what other processes see afterwards is the same in both cases
    # A new process finds what this one built after the deletion. The records this process
    # wrote again point at modules it had loaded before the deletion, which are not on disk
    # any more: their two functions are compiled again, once, and then found by everyone.
    check_worker(result_of(worker(seeded, "pair+1")), layer="pair+1", functions_built=2)
    check_worker(result_of(worker(seeded)), functions_built=0)
    assert_sound(seeded)


# -- read-only and impossible locations ------------------------------------------------------------
def test_a_read_only_cache_falls_back_and_a_warm_one_still_serves(seeded):
    # chmod would not do: root writes through permission bits. A read-only bind mount stops everyone.
    run_here()
    records = set(entries_of_kind(seeded, "c-structure"))
    run_here("pair+1")  # this process has prepared (and written) the directory before it turns read-only
    [lost] = set(entries_of_kind(seeded, "c-structure")) - records
    shutil.rmtree(lost)  # the record of pair+1's third function is gone (say, its builder was killed)
    with read_only(seeded):
        # A new process: everything it needs is there, nothing needs writing, nothing to say.
        check_worker(result_of(worker(seeded)), functions_built=0)
        # A new process that must write moves to a private cache and says so.
        result = result_of(worker(seeded, "pair+1"))
        assert result["method"] == "CPU_JIT" and result["stats"]["functions_built"] == 1  # just the lost one
        assert any("EROFS" in m and str(seeded) in m for _, m in result["warnings"]), result["warnings"]
        check_results("pair+1", result["forward"], result["backward"])
        # The same in this process, whose cache was prepared before the mount turned read-only.
        with pytest.warns(PerformanceWarning, match="EROFS"):
            run_here("pair+1")
    assert_sound(seeded)


@pytest.mark.parametrize("how", ["read-only-tmpfs", "path-is-a-file", "below-a-file", "missing-parent"])
def test_an_impossible_or_missing_location(tmp_path, how):
    if how == "read-only-tmpfs":
        configured = tmp_path / "ro"
        stack = mounted(configured, ["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"])
        error = "EROFS"
    else:
        stack = contextlib.nullcontext()
        blocker = tmp_path / "a-file"
        blocker.write_text("not a directory")
        configured = {"path-is-a-file": blocker, "below-a-file": blocker / "cache",
                      "missing-parent": tmp_path / "not" / "yet" / "cache"}[how]
        error = None if how == "missing-parent" else "ENOTDIR"
    with stack, config.override(cache_dir=str(configured)):
        if error is None:  # a missing directory is simply created
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                run_here()
            assert len(entries_of_kind(configured, "c-module")) == 1
            check_worker(result_of(worker(configured)), functions_built=0)
            return
        with pytest.warns(PerformanceWarning) as caught:
            run_here()
        [message] = fallback_messages(caught, configured)
        assert error in message and "HETEROSYMNN_CACHE_DIR" in message
        result = result_of(worker(configured))
        check_worker(result, functions_built=2, warned=True)
        assert any(error in m and str(configured) in m for _, m in result["warnings"])
    if how != "read-only-tmpfs":
        assert blocker.read_text() == "not a directory"
