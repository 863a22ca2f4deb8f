"""Choosing among detectors: order, explicit choices, and the not-found message."""
from __future__ import annotations

import shutil
import sys

import pytest

from heterosymnn.config import override
from heterosymnn.errors import BackendUnavailableError, ToolchainNotFoundError
from heterosymnn.toolchains import detect_all, find_toolchain
from heterosymnn.toolchains import zig as zig_module


def test_detect_all_reports_every_detector(fresh_caches):
    results = detect_all()
    assert [r.name for r in results] == ["msvc", "gcc/clang", "zig"]
    for r in results:
        assert isinstance(r.reason, str) and r.reason
        assert r.usable == (r.toolchain is not None)
    if sys.platform != "win32":
        assert not results[0].usable and "Windows" in results[0].reason


@pytest.mark.skipif(sys.platform == "win32" or not (shutil.which("cc") or shutil.which("gcc")),
                    reason="needs a system C compiler")
def test_default_prefers_system_compiler_over_zig(fresh_caches):
    with override(cc=None, toolchain=None):
        tc = find_toolchain()
    assert tc.name in ("gcc", "clang")


def test_unknown_forced_family(fresh_caches):
    with override(toolchain="tcc"):
        with pytest.raises(ToolchainNotFoundError) as info:
            find_toolchain()
    assert "gcc, clang, msvc, zig" in str(info.value)


@pytest.mark.skipif(sys.platform == "win32", reason="MSVC may be installed on Windows")
def test_forced_msvc_off_windows_is_an_error_not_a_fallback(fresh_caches):
    with override(toolchain="msvc"):
        with pytest.raises(ToolchainNotFoundError) as info:
            find_toolchain()
    assert "only used on Windows" in str(info.value)


def test_nothing_usable_lists_reasons_and_fixes(fresh_caches, tmp_path, monkeypatch):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(zig_module, "find_zig", lambda: None)
    with override(cc=None, toolchain=None):
        with pytest.raises(ToolchainNotFoundError) as info:
            find_toolchain()
    text = str(info.value)
    assert isinstance(info.value, BackendUnavailableError)
    for piece in ("msvc:", "gcc/clang:", "zig:", "not found", "ziglang package is not installed",
                  "apt install gcc", "xcode-select --install", "Visual Studio Build Tools",
                  "pip install heterosymnn[zig]"):
        assert piece in text, piece
