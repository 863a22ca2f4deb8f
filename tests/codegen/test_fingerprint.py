"""The generator digest in every cache key: changed generator code never reuses old kernels.

The end-to-end tests run a *copy* of the package in child processes sharing one
cache, once unchanged and once with ``differentiate`` changed, the way a user
who upgrades (or edits) heterosymnn meets a cache written by the old code.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import heterosymnn
from heterosymnn.cache import cache_key
from heterosymnn.codegen import fingerprint

PACKAGE = Path(heterosymnn.__file__).resolve().parent

# Prints, as JSON, which package ran, the CPU_JIT and CPU_PYTHON gradients of one layer and
# how many builds that took.
_CHILD = r"""
import json, sys, warnings
import numpy as np
import heterosymnn
from heterosymnn import SymbolicJITCompiler
from heterosymnn.cache import stats
warnings.simplefilter("error")            # a fallback to CPU_PYTHON would hide the bug
configs = ["tanh", ("a*sin(num)", {"a": 1.5})]
z = np.linspace(-2, 2, 16).reshape(2, 8)
grad = np.ones_like(z)
jit = SymbolicJITCompiler(configs, "CPU_JIT", dtype="float64", strict=True)
python = SymbolicJITCompiler(configs, "CPU_PYTHON", dtype="float64")
print(json.dumps({"package": heterosymnn.__file__, "builds": stats().builds,
                  "jit": jit.backward_kernel(z, grad).tolist(),
                  "python": python.backward_kernel(z, grad).tolist()}))
"""


def _run(package_parent: Path, cache_dir: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(package_parent), HETEROSYMNN_CACHE_DIR=str(cache_dir))
    done = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True,
                          timeout=300, cwd=str(package_parent))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(result["package"]).resolve().parent.parent == package_parent.resolve()
    return result


def _copy_package(tmp_path: Path, name: str) -> Path:
    parent = tmp_path / name
    shutil.copytree(PACKAGE, parent / "heterosymnn", ignore=shutil.ignore_patterns("__pycache__"))
    return parent


def _double_every_derivative(package: Path) -> None:
    path = package / "symbolic" / "derivative.py"
    text = path.read_text(encoding="utf-8")
    old = "    return derivative\n\n\n#: Above this many"
    assert text.count(old) == 1, "differentiate() changed shape: update this test's patch"
    path.write_text(text.replace(old, "    return 2 * derivative\n\n\n#: Above this many"), encoding="utf-8")


def test_changed_generator_code_never_reuses_old_kernels(tmp_path, fresh_cache_dir):
    original = _run(_copy_package(tmp_path, "original"), fresh_cache_dir)
    assert original["builds"] > 0
    np.testing.assert_allclose(original["jit"], original["python"], rtol=1e-12)

    unchanged = _run(_copy_package(tmp_path, "unchanged"), fresh_cache_dir)
    assert unchanged["builds"] == 0, "the same generator code in another folder must keep its cache"
    assert unchanged["jit"] == original["jit"]

    changed_parent = _copy_package(tmp_path, "changed")
    _double_every_derivative(changed_parent / "heterosymnn")
    changed = _run(changed_parent, fresh_cache_dir)
    # Before the digest, CPU_JIT answered from the cache with the old derivative here.
    assert changed["builds"] > 0
    np.testing.assert_allclose(changed["python"], 2 * np.asarray(original["python"]), rtol=1e-12)
    np.testing.assert_allclose(changed["jit"], changed["python"], rtol=1e-12)


def test_digest_covers_the_generator_and_nothing_else(tmp_path):
    copy = _copy_package(tmp_path, "copy") / "heterosymnn"
    assert fingerprint.generator_digest(copy) == fingerprint.current_generator_digest()

    (copy / "doctor" / "render.py").write_text("# not part of the generator\n", encoding="utf-8")
    assert fingerprint.generator_digest(copy) == fingerprint.current_generator_digest()

    for part in ("symbolic/named_table.py", "codegen/c_printer.py", "codegen/c_runtime.py",
                 "backends/cpu_modules.py"):
        path = copy / part
        original = path.read_bytes()
        path.write_bytes(original + b"\n# edited\n")
        assert fingerprint.generator_digest(copy) != fingerprint.current_generator_digest(), part
        path.write_bytes(original)

    # A new module in a generator folder counts too; Windows line endings do not.
    (copy / "symbolic" / "extra.py").write_text("X = 1\n", encoding="utf-8")
    assert fingerprint.generator_digest(copy) != fingerprint.current_generator_digest()
    (copy / "symbolic" / "extra.py").unlink()
    path = copy / "symbolic" / "parser.py"
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    assert fingerprint.generator_digest(copy) == fingerprint.current_generator_digest()


def test_every_cache_key_carries_the_digest(monkeypatch):
    before = cache_key("c-module", source="int f;", toolchain_identity="gcc")
    monkeypatch.setattr("heterosymnn.cache.key.current_generator_digest", lambda: "0" * 64)
    assert cache_key("c-module", source="int f;", toolchain_identity="gcc") != before


def test_computing_the_digest_imports_no_sympy():
    code = ("import sys; from heterosymnn.codegen.fingerprint import current_generator_digest as d; "
            "d(); print('sympy' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize("missing", ["symbolic", "codegen"])
def test_a_sourceless_install_falls_back_to_the_version(tmp_path, caplog, missing):
    bare = tmp_path / "bare"
    (bare / missing).mkdir(parents=True)
    digest = fingerprint.generator_digest(bare)
    assert len(digest) == 64 and digest != fingerprint.current_generator_digest()
    assert "source files were not found" in caplog.text


def test_the_toolchain_record_is_keyed_on_the_detectors_code(monkeypatch, tmp_path):
    from heterosymnn.toolchains import persisted

    copy = _copy_package(tmp_path, "copy") / "heterosymnn"
    assert fingerprint.generator_digest(copy, fingerprint.DETECTOR_PARTS) == fingerprint.current_detector_digest()
    before = persisted.fingerprint()
    monkeypatch.setattr(persisted, "current_detector_digest", lambda: "1" * 64)
    assert persisted.fingerprint() != before
