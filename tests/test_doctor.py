"""``python -m heterosymnn.doctor``: every section, live backend checks, isolation, exit status."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from heterosymnn import doctor
from heterosymnn.doctor import live, probes

REPO = Path(__file__).resolve().parents[1]
TOP_KEYS = {"platform", "packages", "toolchains", "cuda", "cache", "env", "backends", "errors"}
BACKENDS = {"CPU_PYTHON", "CPU_JIT", "GPU_CUDA"}


def run_doctor(cache_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """The doctor in a child process with a clean HETEROSYMNN_* environment."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("HETEROSYMNN_")}
    child_env.update(PYTHONPATH=str(REPO), HETEROSYMNN_CACHE_DIR=str(cache_dir), **env)
    return subprocess.run([sys.executable, "-m", "heterosymnn.doctor", *args], env=child_env,
                          capture_output=True, text=True, timeout=300)


def test_collect_in_process(fresh_cache_dir):
    info = doctor.collect()
    assert set(info) == TOP_KEYS
    assert info["errors"] == []
    assert info["platform"]["python_version"] and info["platform"]["isa_level"]
    assert set(probes.PACKAGES) <= set(info["packages"]) and info["packages"]["numpy"]
    assert all({"name", "path", "version", "openmp", "usable", "reason"} <= set(t) for t in info["toolchains"])
    assert info["cache"]["dir"].startswith(str(fresh_cache_dir))
    assert {"writable", "size_bytes", "entries"} <= set(info["cache"])
    assert "CC" in info["env"] and "CUDA_PATH" in info["env"]
    assert set(info["backends"]) == BACKENDS
    assert info["backends"]["CPU_PYTHON"]["ok"] and info["backends"]["CPU_JIT"]["ok"]
    assert doctor.compiled_backend_ok(info)
    json.dumps(info)  # JSON-ready without a default= hook


def test_json_subprocess(tmp_path):
    proc = run_doctor(tmp_path, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    info = json.loads(proc.stdout)
    assert set(info) == TOP_KEYS
    assert info["cache"]["dir"].startswith(str(tmp_path))
    assert info["env"]["HETEROSYMNN_CACHE_DIR"] == str(tmp_path)
    backends = info["backends"]
    assert set(backends) == BACKENDS
    for row in backends.values():
        assert {"ok", "seconds", "reason", "fix"} <= set(row)
    assert backends["CPU_JIT"]["ok"] is True and backends["CPU_JIT"]["seconds"] > 0
    gpu = backends["GPU_CUDA"]
    if not info["cuda"].get("available"):  # the usual case on a test machine
        assert gpu["ok"] is False and gpu["reason"] and gpu["fix"]
        assert info["cuda"]["reason"]


def test_text_subprocess(tmp_path):
    proc = run_doctor(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for title in ("Platform", "Packages", "Toolchains (C and CUDA)", "CUDA", "Kernel cache", "Environment",
                  "Backends (live check)", "Probe errors"):
        assert f"\n{title}\n" in out
    assert "  python_version" in out and " : " in out
    assert [line for line in out.splitlines() if line.strip().startswith("CPU_JIT ")][0].endswith(" s)")
    assert "CPU_JIT    : PASS" in out


@pytest.mark.skipif(sys.platform == "win32", reason="uses a shell script as the fake compiler")
def test_broken_compiler_still_reports_everything(tmp_path):
    # HETEROSYMNN_CC is an explicit choice, so heterosymnn never switches to zig behind
    # it: CPU_JIT must fail even where zig is installed.
    fake = tmp_path / "not-a-compiler"
    fake.write_text("#!/bin/sh\necho 'this is not a compiler' >&2\nexit 1\n")
    fake.chmod(0o755)
    proc = run_doctor(tmp_path / "cache", "--json", HETEROSYMNN_CC=str(fake))
    info = json.loads(proc.stdout)
    assert proc.returncode == (0 if info["backends"]["GPU_CUDA"]["ok"] else 1)
    assert info["errors"] == []
    assert info["platform"]["system"] and info["packages"]["sympy"] and info["cache"]["dir"]
    assert info["env"]["HETEROSYMNN_CC"] == str(fake)
    gcc = [t for t in info["toolchains"] if t["name"] == "gcc/clang"][0]
    assert gcc["usable"] is False and str(fake) in gcc["reason"]
    jit = info["backends"]["CPU_JIT"]
    assert jit["ok"] is False and str(fake) in jit["reason"]
    assert "HETEROSYMNN_CC" in jit["fix"]
    assert info["backends"]["CPU_PYTHON"]["ok"] is True
    text = run_doctor(tmp_path / "cache", HETEROSYMNN_CC=str(fake)).stdout
    assert "CPU_JIT    : FAIL" in text and "fix      :" in text


def test_failing_probe_is_isolated(monkeypatch):
    def broken():
        raise RuntimeError("probe exploded")

    monkeypatch.setattr(probes, "probe_cuda", broken)
    info = doctor.collect()
    assert set(info) == TOP_KEYS
    assert [e["probe"] for e in info["errors"]] == ["cuda"]
    assert "probe exploded" in info["errors"][0]["error"] and "RuntimeError" in info["errors"][0]["traceback"]
    assert info["cuda"] == {"error": "RuntimeError: probe exploded"}
    assert info["platform"]["machine"] and info["toolchains"] and info["cache"]["dir"]
    assert info["backends"]["CPU_JIT"]["ok"] and info["backends"]["GPU_CUDA"]["fix"]
    text = doctor.render(info)
    assert "Probe errors" in text and "probe exploded" in text


def test_no_compiled_backend_means_exit_1(monkeypatch, capsys):
    monkeypatch.setattr(live, "probe_backends", lambda cuda=None: {
        name: {"ok": name == "CPU_PYTHON", "seconds": 0.0, "reason": None, "fix": None} for name in BACKENDS})
    assert doctor.main([]) == 1
    assert "CPU_PYTHON : PASS" in capsys.readouterr().out


def test_unusable_cache_is_reported_not_fatal(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache directory should be")
    from heterosymnn import config

    with config.override(cache_dir=str(blocker / "cache")):
        monkeypatch.setattr(live, "probe_backends", lambda cuda=None: {})
        info = doctor.collect()
    assert info["errors"] == []
    assert info["cache"]["writable"] is False and "HETEROSYMNN_CACHE_DIR" in info["cache"]["problem"]


def test_malformed_setting_is_diagnosed():
    reason, fix = live.diagnose("CPU_JIT", ValueError("environment variable HETEROSYMNN_X='a' is not a valid int"))
    assert "HETEROSYMNN_X" in reason and "unset" in fix


def test_diagnose_gives_fixes():
    from heterosymnn.errors import BackendUnavailableError, CacheError, ToolchainNotFoundError

    _, fix = live.diagnose("CPU_JIT", ToolchainNotFoundError("no compiler"))
    assert "gcc" in fix or "Build Tools" in fix or "xcode" in fix
    assert "heterosymnn[zig]" in fix
    _, fix = live.diagnose("GPU_CUDA", BackendUnavailableError("no"), {"available": False, "reason": "x"})
    assert "heterosymnn[gpu]" in fix
    _, fix = live.diagnose("GPU_CUDA", BackendUnavailableError("no"), {"cupy_version": "13", "device_count": 0})
    assert "driver" in fix
    wrapped = BackendUnavailableError("strict")
    wrapped.__cause__ = CacheError("read-only")
    assert "HETEROSYMNN_CACHE_DIR" in live.diagnose("CPU_JIT", wrapped)[1]


# -- CUDA compilers (no GPU needed) ---------------------------------------------------------------------
def test_json_lists_nvrtc_and_nvcc_with_versions_and_architectures(tmp_path):
    from heterosymnn.toolchains.cuda_compiler import detect

    proc = run_doctor(tmp_path, "--json")
    info = json.loads(proc.stdout)
    rows = {t["name"]: t for t in info["toolchains"] if t.get("kind") == "cuda"}
    assert set(rows) == {"nvrtc", "nvcc"}
    for name, row in rows.items():
        assert {"usable", "selected", "path", "version", "architectures", "reason", "fix"} <= set(row)
        status = detect(name)
        assert row["usable"] is status.usable
        if status.usable:  # this machine's real compilers, as the detector sees them
            assert row["version"] == status.compiler.version and row["path"] == status.compiler.path
            assert row["architectures"] == list(status.compiler.architectures)
            assert {"sm_80", "sm_90"} <= set(row["architectures"])
        else:
            assert row["reason"] and row["fix"] and row["architectures"] == []
    selected = [name for name, row in rows.items() if row["selected"]]
    assert selected == ([info["cuda"]["compiler"]] if info["cuda"]["compiler"] else [])
    assert set(info["cuda"]["compilers"]) == {"nvrtc", "nvcc"}
    assert info["cuda"]["compilers"]["nvcc"]["version"] == rows["nvcc"]["version"]


def test_forced_cuda_compiler_is_the_selected_one(tmp_path):
    from heterosymnn.toolchains.cuda_compiler import detect

    if not detect("nvcc").usable:
        pytest.skip("no nvcc on this machine")
    info = json.loads(run_doctor(tmp_path, "--json", HETEROSYMNN_CUDA_COMPILER="nvcc").stdout)
    rows = {t["name"]: t for t in info["toolchains"] if t.get("kind") == "cuda"}
    assert rows["nvcc"]["selected"] and not rows["nvrtc"]["selected"] and info["cuda"]["compiler"] == "nvcc"
    if rows["nvrtc"]["usable"]:
        assert rows["nvrtc"]["reason"] == "not used: HETEROSYMNN_CUDA_COMPILER=nvcc"
    text = run_doctor(tmp_path, HETEROSYMNN_CUDA_COMPILER="nvcc").stdout
    assert [line for line in text.splitlines() if line.strip().startswith("nvcc ")][0].endswith("(selected)")


def test_missing_nvcc_says_why_and_how_to_fix(tmp_path):
    text = run_doctor(tmp_path, HETEROSYMNN_NVCC="no-such-nvcc").stdout
    line = [ln for ln in text.splitlines() if ln.strip().startswith("nvcc ")][0]
    assert "not usable: ToolchainNotFoundError: HETEROSYMNN_NVCC='no-such-nvcc' is not an executable nvcc" in line
    assert "fix: install the CUDA toolkit" in text
