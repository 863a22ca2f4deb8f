"""``python -m heterosymnn.cache warm`` and :func:`warm_layers`: cubins for named architectures
without a GPU (NVRTC, and nvcc when forced), CPU modules, one build per entry across processes,
damaged cubins rebuilt, warm constructions that build nothing, and clear errors for bad input.

The CUDA compilers are real (tests skip where this machine has none); nothing here needs a GPU.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

from heterosymnn import CompilationWarning, SymbolicJITCompiler, cache
from heterosymnn.cache.warm import WarmReport, load_layer_file, warm_layers
from heterosymnn.toolchains import cuda_compiler
from heterosymnn.toolchains.cuda_compiler import detect, elf_architecture

REPO = Path(__file__).resolve().parents[2]
LAYERS = [["relu", ["a*sin(w*num)", {"a": 2.0, "w": 3.0}], "tanh"], ["sigmoid", ["k*num", {"k": 0.5}]]]


def _need(name: str) -> None:
    cuda_compiler.clear_caches()
    if not detect(name).usable:
        pytest.skip(f"no {name} on this machine")


def _env(cache_dir: Path, **extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HETEROSYMNN_")}
    env.update(PYTHONPATH=str(REPO), HETEROSYMNN_CACHE_DIR=str(cache_dir), HETEROSYMNN_BUILD_JOBS="1", **extra)
    return env


def _warm_cli(cache_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "heterosymnn.cache", "warm", *args], env=_env(cache_dir, **env),
                          capture_output=True, text=True, timeout=300)


def _log(cache_dir: Path) -> List[dict]:
    path = cache_dir / f"v{cache.CACHE_SCHEMA}" / "builds.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _entries(cache_dir: Path, kind: str) -> List[Path]:
    return [meta.parent for meta in sorted((cache_dir / f"v{cache.CACHE_SCHEMA}").rglob("meta.json"))
            if json.loads(meta.read_text()).get("kind") == kind]


def _layer_file(tmp_path: Path, layers=LAYERS) -> Path:
    path = tmp_path / "layers.json"
    path.write_text(json.dumps(layers))
    return path


@pytest.mark.parametrize("compiler", ["nvrtc", "nvcc"])
def test_warm_builds_cubins_for_each_architecture_without_a_gpu(tmp_path, compiler):
    _need(compiler)
    cache_dir, configs = tmp_path / "cache", _layer_file(tmp_path)
    proc = _warm_cli(cache_dir, "--configs", str(configs), "--targets", "sm_80,sm_90",
                     HETEROSYMNN_CUDA_COMPILER=compiler)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "built: " in proc.stdout and "2 cuda-cubin (sm_80)" in proc.stdout and "2 cuda-cubin (sm_90)" in proc.stdout
    cubins = _entries(cache_dir, "cuda-cubin")
    assert len(cubins) == 4  # 2 layers x 2 architectures
    for entry in cubins:
        meta = json.loads((entry / "meta.json").read_text())
        data = (entry / "kernels.cubin").read_bytes()
        assert elf_architecture(data) == meta["arch"] == meta["target"]
        assert meta["toolchain"].startswith(f"{compiler} ") and meta["dtype"] == "float32"
        assert 'extern "C" __global__ void hs_forward_rows_f32' in (entry / "kernels.cu").read_text()
    logged = [line for line in _log(cache_dir) if line["kind"] == "cuda-cubin"]
    assert sorted(line["toolchain"].rsplit(" ", 1)[-1] for line in logged) == ["sm_80", "sm_80", "sm_90", "sm_90"]

    again = _warm_cli(cache_dir, "--configs", str(configs), "--targets", "sm_80,sm_90",
                      HETEROSYMNN_CUDA_COMPILER=compiler)
    assert again.returncode == 0 and "built: 0 entries" in again.stdout and "present: 10 entries" in again.stdout
    assert len(_log(cache_dir)) == len(logged)

    listing = subprocess.run([sys.executable, "-m", "heterosymnn.cache", "list"], env=_env(cache_dir),
                             capture_output=True, text=True, timeout=120).stdout
    assert "kind=cuda-cubin" in listing and "arch=sm_80" in listing and "arch=sm_90" in listing


def test_nvrtc_and_nvcc_cubins_have_their_own_keys(monkeypatch):
    _need("nvrtc")
    _need("nvcc")
    monkeypatch.delenv("HETEROSYMNN_CUDA_COMPILER", raising=False)
    first = warm_layers(LAYERS[:1], targets=["sm_80"])
    monkeypatch.setenv("HETEROSYMNN_CUDA_COMPILER", "nvcc")
    second = warm_layers(LAYERS[:1], targets=["sm_80"])
    kinds = lambda report: {e.kind: e.key for e in report.built}  # noqa: E731
    assert set(kinds(first)) == {"layer-plan", "cuda-layer", "cuda-cubin"}
    assert set(kinds(second)) == {"cuda-layer", "cuda-cubin"}  # the plan was there already
    assert kinds(first)["cuda-cubin"] != kinds(second)["cuda-cubin"]


N_PROCESSES = 12


def test_twelve_processes_warming_at_once_build_each_cubin_once(tmp_path):
    _need("nvrtc")
    cache_dir, configs = tmp_path / "cache", _layer_file(tmp_path)
    args = [sys.executable, "-m", "heterosymnn.cache", "warm", "--configs", str(configs), "--targets", "sm_80,sm_90",
            "--json"]
    procs = [subprocess.Popen(args, env=_env(cache_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(N_PROCESSES)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    logged = [line for line in _log(cache_dir) if line["kind"] == "cuda-cubin"]
    assert len(logged) == 4 and len({line["key"] for line in logged}) == 4
    reports = [json.loads(out) for out, _ in outputs]
    built = [e["key"] for r in reports for e in r["built"] if e["kind"] == "cuda-cubin"]
    assert sorted(built) == sorted(line["key"] for line in logged)  # each reported by its one builder
    for report in reports:
        assert {e["kind"] for e in report["built"] + report["present"]} >= {"cuda-cubin", "cuda-layer"}
        assert report["failed"] == []


def test_a_truncated_cubin_is_detected_and_rebuilt(fresh_cache_dir):
    _need("nvrtc")
    first = warm_layers(LAYERS[:1], targets=["sm_90"])
    (cubin_key,) = [e.key for e in first.built if e.kind == "cuda-cubin"]
    (entry,) = _entries(fresh_cache_dir, "cuda-cubin")
    path = entry / "kernels.cubin"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.warns(CompilationWarning, match="kernels.cubin"):
        second = warm_layers(LAYERS[:1], targets=["sm_90"])
    assert [e.key for e in second.built if e.kind == "cuda-cubin"] == [cubin_key]
    (entry,) = _entries(fresh_cache_dir, "cuda-cubin")
    assert elf_architecture((entry / "kernels.cubin").read_bytes()) == "sm_90"
    assert [line["key"] for line in _log(fresh_cache_dir) if line["kind"] == "cuda-cubin"] == [cubin_key] * 2


def test_cpu_warm_makes_training_construction_build_nothing(fresh_cache_dir):
    report = warm_layers(LAYERS, targets=["cpu"], dtypes=["float64"])
    kinds = {e.kind for e in report.built}
    assert kinds == {"layer-plan", "c-runtime", "c-structure", "c-module", "c-structure-cgrad", "c-cgrad-module"}
    assert report.failed == () and set(report.keys) == {e.key for e in report.built}
    lines = len(_log(fresh_cache_dir))
    cache.reset_stats()
    for configs in LAYERS:
        comp = SymbolicJITCompiler(configs, "CPU_JIT", dtype="float64", strict=True)
        z = np.linspace(-2, 2, len(configs) * 8).reshape(len(configs), 8)
        grad = np.ones_like(z)
        comp.backward_kernel(z, grad, constants_grad=np.zeros(len(comp.constant_names)))
    assert cache.stats().builds == 0 and len(_log(fresh_cache_dir)) == lines
    again = warm_layers(LAYERS, targets=["cpu"], dtypes=["float64"])
    assert again.built == () and set(again.keys) == set(report.keys)


def test_failures_are_reported_and_the_rest_is_built(tmp_path):
    cache_dir = tmp_path / "cache"
    configs = _layer_file(tmp_path, [["relu"], ["factorial(num)"]])
    proc = _warm_cli(cache_dir, "--configs", str(configs), "--targets", "cpu", "--no-constants-grad")
    assert proc.returncode == 1
    assert "FAILED: cpu float32 activation: layer 1: FormulaParsingError" in proc.stderr
    assert "error: 1 warm step(s) failed: cpu/float32/activation" in proc.stderr
    assert "1 c-structure (cpu)" in proc.stdout


def test_bad_arguments_and_the_empty_report():
    with pytest.raises(ValueError, match="unknown target 'gpu': use cpu or a CUDA architecture such as sm_80"):
        warm_layers([["relu"]], targets=["gpu"])
    with pytest.raises(ValueError, match="unknown dtype 'float16': use float32 or float64"):
        warm_layers([["relu"]], dtypes=["float16"])
    empty = WarmReport((), (), ())
    assert empty.keys == () and empty.ok


@pytest.mark.parametrize("text, message", [
    (None, "cannot read the layer file"),
    ("{not json", "is not valid JSON"),
    ('{"a": 1}', "must hold a non-empty JSON list of layers"),
    ("[]", "must hold a non-empty JSON list of layers, got an empty list"),
    ('["relu"]', "layer 0 of .* must be a non-empty list of node configs"),
    ('[["relu", 3]]', r"layer 0, node 1 of .*: a config is a formula string or \[formula"),
    ('[["relu"], [["sin(num)", [1]]]]', "layer 1, node 0"),
])
def test_bad_layer_files_are_named(tmp_path, text, message):
    path = tmp_path / "layers.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_layer_file(path)
    proc = _warm_cli(tmp_path / "cache", "--configs", str(path))
    assert proc.returncode == 2 and "error: " in proc.stderr and proc.stdout == ""


def test_cli_rejects_a_bad_target(tmp_path):
    proc = _warm_cli(tmp_path / "cache", "--configs", str(_layer_file(tmp_path)), "--targets", "cpu,sm_x")
    assert proc.returncode == 2 and "unknown target 'sm_x'" in proc.stderr


def test_a_cubin_for_another_architecture_under_the_key_is_rejected_and_rebuilt(fresh_cache_dir):
    # A consistent entry (checksums updated) holding the wrong architecture's cubin, as an
    # edited or foreign cache could: its ELF header is checked before it reaches the driver.
    _need("nvrtc")
    from heterosymnn.cache.entry import sha256_file

    first = warm_layers(LAYERS[:1], targets=["sm_80", "sm_90"])
    entries = {json.loads((e / "meta.json").read_text())["arch"]: e for e in _entries(fresh_cache_dir, "cuda-cubin")}
    wrong = (entries["sm_90"] / "kernels.cubin").read_bytes()
    target = entries["sm_80"] / "kernels.cubin"
    target.write_bytes(wrong)
    meta_path = entries["sm_80"] / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["files"]["kernels.cubin"], meta["sizes"]["kernels.cubin"] = sha256_file(target), len(wrong)
    meta_path.write_text(json.dumps(meta))
    with pytest.warns(CompilationWarning, match="the cubin is for sm_90, expected sm_80"):
        second = warm_layers(LAYERS[:1], targets=["sm_80", "sm_90"])
    rebuilt = [e for e in second.built if e.kind == "cuda-cubin"]
    assert [(e.target, e.key) for e in rebuilt] == [(e.target, e.key) for e in first.built
                                                     if e.kind == "cuda-cubin" and e.target == "sm_80"]
    (entry,) = [e for e in _entries(fresh_cache_dir, "cuda-cubin")
                if json.loads((e / "meta.json").read_text())["arch"] == "sm_80"]
    assert elf_architecture((entry / "kernels.cubin").read_bytes()) == "sm_80"
