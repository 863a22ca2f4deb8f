"""The CUDA compiler detectors (NVRTC, nvcc), selection, targets and the cubins they write.

Real compilers where this machine has them (skipped otherwise); nvcc's search order is
also checked against a small installation tree whose ``bin/nvcc`` is a shell script that
answers like nvcc (so CUDA_PATH/CUDA_HOME/PATH handling is tested where no toolkit exists).
"""
from __future__ import annotations

import dataclasses
import json
import sys

import pytest

from heterosymnn.backends.cuda import probe_source
from heterosymnn.errors import JITCompilationError, ToolchainNotFoundError
from heterosymnn.toolchains import cuda_compiler, nvcc
from heterosymnn.toolchains.cuda_compiler import (
    CudaCompiler, arch_number, detect, elf_architecture, find_cuda_compiler,
)


@pytest.fixture(autouse=True)
def fresh_detection(monkeypatch):
    for name in ("HETEROSYMNN_CUDA_COMPILER", "HETEROSYMNN_NVCC"):
        monkeypatch.delenv(name, raising=False)
    cuda_compiler.clear_caches()
    yield
    cuda_compiler.clear_caches()


def _usable(name: str) -> CudaCompiler:
    status = detect(name)
    if status.compiler is None:
        pytest.skip(f"no {name} on this machine: {status.reason}")
    return status.compiler


@pytest.mark.parametrize("name", ["nvrtc", "nvcc"])
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_real_compiler_writes_a_cubin_for_the_architecture(name, arch):
    compiler = _usable(name)
    assert compiler.name == name and compiler.version[0].isdigit() and compiler.path
    assert arch in compiler.architectures
    binary = compiler.compile(probe_source(), arch)
    assert (binary.format, binary.target) == ("cubin", arch)
    assert binary.data[:4] == b"\x7fELF" and elf_architecture(binary.data) == arch


@pytest.mark.parametrize("name", ["nvrtc", "nvcc"])
def test_compiler_error_carries_the_log(name):
    compiler = _usable(name)
    with pytest.raises(JITCompilationError, match=f"(?i){name} .* could not compile") as info:
        compiler.compile('extern "C" __global__ void k() { undefined_name = 1; }', "sm_80")
    assert "undefined_name" in str(info.value)


def test_architecture_newer_than_the_compiler_knows_gets_ptx_for_the_driver_jit():
    compiler = dataclasses.replace(_usable("nvrtc"), architectures=("sm_75", "sm_80"))
    assert compiler.target_for("sm_80") == ("cubin", "sm_80")
    assert compiler.target_for("sm_90") == ("ptx", "compute_80")
    binary = compiler.compile(probe_source(), "sm_90")
    assert binary.format == "ptx" and b".target sm_80" in binary.data and elf_architecture(binary.data) is None
    with pytest.raises(ValueError, match="oldest architecture it supports is sm_75"):
        compiler.target_for("sm_70")


@pytest.mark.parametrize("bad", ["80", "compute_80", "sm80", "sm_x", ""])
def test_architecture_names_are_checked(bad):
    with pytest.raises(ValueError, match="write it as sm_<major><minor>, e.g. sm_80"):
        arch_number(bad)


def test_elf_architecture_rejects_what_is_not_a_cuda_elf(tmp_path):
    assert elf_architecture(b"") is None
    assert elf_architecture(b"\x7fELF" + b"\x00" * 60) is None
    assert elf_architecture(open(sys.executable, "rb").read(64)) is None  # a host ELF


def test_identity_names_compiler_version_path_and_options():
    found = [c for c in (detect("nvrtc").compiler, detect("nvcc").compiler) if c is not None]
    if not found:
        pytest.skip("no CUDA compiler on this machine")
    for compiler in found:
        identity = json.loads(compiler.identity())
        assert identity == {"compiler": compiler.name, "version": compiler.version, "path": compiler.path,
                            "options": ["--fmad=false"]}
    assert len({c.identity() for c in found}) == len(found)


# -- selection ------------------------------------------------------------------------------------
def test_nvrtc_is_preferred_and_the_environment_forces_one(monkeypatch):
    _usable("nvrtc")
    assert find_cuda_compiler().name == "nvrtc"
    _usable("nvcc")
    monkeypatch.setenv("HETEROSYMNN_CUDA_COMPILER", "nvcc")
    assert find_cuda_compiler().name == "nvcc"
    monkeypatch.setenv("HETEROSYMNN_CUDA_COMPILER", "NVRTC")
    assert find_cuda_compiler().name == "nvrtc"


def test_a_bad_choice_is_an_error_naming_the_fix(monkeypatch):
    monkeypatch.setenv("HETEROSYMNN_CUDA_COMPILER", "clang")
    with pytest.raises(ValueError, match="HETEROSYMNN_CUDA_COMPILER='clang' is not a CUDA compiler; use 'nvrtc' or 'nvcc'"):
        find_cuda_compiler()


def test_forced_nvcc_that_does_not_work_never_switches_silently(monkeypatch):
    monkeypatch.setenv("HETEROSYMNN_CUDA_COMPILER", "nvcc")
    monkeypatch.setenv("HETEROSYMNN_NVCC", "no-such-nvcc-anywhere")
    with pytest.raises(ToolchainNotFoundError) as info:
        find_cuda_compiler()
    text = str(info.value)
    assert "the CUDA compiler nvcc (forced by HETEROSYMNN_CUDA_COMPILER) is not usable" in text
    assert "HETEROSYMNN_NVCC='no-such-nvcc-anywhere' is not an executable nvcc" in text
    assert "fix: install the CUDA toolkit" in text


# -- nvcc's search order, against an installation tree ----------------------------------------------
FAKE_NVCC = """#!/bin/sh
case "$1" in
  --version) printf 'nvcc: NVIDIA (R) Cuda compiler driver\\nCuda compilation tools, release 12.4, V12.4.131\\n' ;;
  --list-gpu-code) printf 'sm_50\\nsm_80\\nsm_90\\nsm_90a\\n' ;;
  *) exit 1 ;;
esac
"""


def _toolkit(root):
    (root / "bin").mkdir(parents=True)
    exe = root / "bin" / "nvcc"
    exe.write_text(FAKE_NVCC)
    exe.chmod(0o755)
    return exe


@pytest.mark.skipif(sys.platform == "win32", reason="the simulated nvcc is a shell script")
@pytest.mark.parametrize("variable", ["CUDA_PATH", "CUDA_HOME", "HETEROSYMNN_NVCC"])
def test_nvcc_is_found_through_the_environment(tmp_path, monkeypatch, variable):
    exe = _toolkit(tmp_path / "cuda-12.4")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # nothing on PATH
    for name in ("CUDA_PATH", "CUDA_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, str(exe if variable == "HETEROSYMNN_NVCC" else exe.parent.parent))
    found = nvcc.find_nvcc()
    assert found.path == str(exe.resolve()) and found.version == (12, 4) and found.build == "V12.4.131"
    assert found.architectures == ("sm_50", "sm_80", "sm_90")  # sm_90a is arch-specific, not a target
    compiler = find_cuda_compiler("nvcc")
    assert compiler.version == "12.4.131" and compiler.target_for("sm_120") == ("ptx", "compute_90")


@pytest.mark.skipif(sys.platform == "win32", reason="the simulated nvcc is a shell script")
def test_no_nvcc_anywhere_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CUDA_PATH", str(tmp_path / "missing"))
    monkeypatch.delenv("CUDA_HOME", raising=False)
    status = detect("nvcc")
    assert not status.usable
    assert "no nvcc under CUDA_PATH/CUDA_HOME or on PATH" in status.reason
    assert "install the CUDA toolkit" in status.reason and "HETEROSYMNN_NVCC" in status.fix
