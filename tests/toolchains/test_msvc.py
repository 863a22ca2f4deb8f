"""MSVC detection.

Windows cannot run here, so the Windows steps run against a simulated Visual
Studio installation: a ``vswhere.exe`` that is really a Python script printing
vswhere's JSON, a ``vcvarsall.bat`` stand-in that prints the environment it
would set, and a ``cl.exe`` that prints the compiler banner. The detector runs
them through its injectable command runner; the runner below stands in for
``cmd.exe`` only (it runs the vcvarsall stand-in and re-encodes its output as
UTF-16LE, as ``cmd /u`` does) and runs everything else for real.
"""
from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
import textwrap

import pytest

from heterosymnn.toolchains import detect_msvc, host_level
from heterosymnn.toolchains import msvc

VC_TOOLS = "14.38.33130"
SDK = "10.0.22621.0"


class SimulatedWindows:
    """Command runner: ``cmd /u /c "<vcvarsall>" <arch> && set`` is simulated."""

    def __init__(self):
        self.cmd_calls = 0
        self.commands = []

    def __call__(self, args, *, env=None, timeout=None):
        self.commands.append(args)
        if isinstance(args, str):
            match = re.fullmatch(r'cmd /u /c "(.+)" (\S+) && set', args)
            assert match, f"unexpected cmd line {args!r}"
            self.cmd_calls += 1
            proc = subprocess.run([sys.executable, match[1], match[2]], capture_output=True,
                                  timeout=timeout)
            out = (proc.stdout + proc.stderr).decode("utf-8").encode("utf-16le")
            return subprocess.CompletedProcess(args, proc.returncode, out, b"")
        return subprocess.run(args, capture_output=True, env=env, timeout=timeout)


def _script(path, body):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def vs_tree(tmp_path):
    """A simulated ``Program Files (x86)`` with VS Build Tools 2022."""

    def make(components=("Microsoft.VisualStudio.Component.VC.Tools.x86.x64",), vcvars_fails=False):
        root = tmp_path / "Program Files (x86)"
        install = root / "Microsoft Visual Studio" / "2022" / "BuildTools"
        _script(root / "Microsoft Visual Studio" / "Installer" / "vswhere.exe", f"""
            import json, sys
            args = sys.argv[1:]
            wanted = args[args.index("-requires") + 1] if "-requires" in args else ""
            assert "-format" in args and args[args.index("-format") + 1] == "json"
            found = wanted in {list(components)!r}
            print(json.dumps([{{"installationPath": {str(install)!r},
                               "installationVersion": "17.8.34330.188",
                               "displayName": "Visual Studio Build Tools 2022"}}] if found else []))
            """)
        msvc_dir = install / "VC" / "Tools" / "MSVC" / VC_TOOLS
        bin_dir = msvc_dir / "bin" / "Hostx64" / "x64"
        _script(bin_dir / "cl.exe", f"""
            import sys
            sys.stderr.write("Microsoft (R) C/C++ Optimizing Compiler Version 19.38.33130 for x64\\n"
                             "Copyright (C) Microsoft Corporation.  All rights reserved.\\n\\n"
                             "usage: cl [ option... ] filename... [ /link linkoption... ]\\n")
            """)
        kits = root / "Windows Kits" / "10"
        env = {
            "INCLUDE": f"{msvc_dir / 'include'};{kits / 'Include' / SDK / 'ucrt'}",
            "LIB": f"{msvc_dir / 'lib' / 'x64'};{kits / 'Lib' / SDK / 'ucrt' / 'x64'}",
            "LIBPATH": f"{msvc_dir / 'lib' / 'x64'}",
            "Path": f"{bin_dir};C:\\Windows\\system32",
            "VCToolsVersion": VC_TOOLS,
            "WindowsSDKVersion": SDK + "\\",
        }
        # `set` also lists cmd's hidden per-drive variables such as "=C:=C:\\"
        lines = "\n".join(f"print({k + '=' + v!r})" for k, v in [*env.items(), ("", "C:=C:\\")])
        _script(install / "VC" / "Auxiliary" / "Build" / "vcvarsall.bat", textwrap.dedent(f"""
            import sys
            print("*" * 70)
            print("** Visual Studio 2022 Developer Command Prompt v17.8.3")
            print("*" * 70)
            if {vcvars_fails!r} or sys.argv[1] not in ("x86", "x64", "arm64"):
                print("[ERROR:vcvarsall.bat] Invalid argument found : " + sys.argv[1])
                sys.exit(1)
            print("[vcvarsall.bat] Environment initialized for: '" + sys.argv[1] + "'")
            """) + lines + "\n")
        return {"ProgramFiles(x86)": str(root)}, env, bin_dir

    msvc.clear_caches()
    yield make
    msvc.clear_caches()


@pytest.mark.skipif(sys.platform == "win32", reason="checks the non-Windows answer")
def test_real_detector_off_windows():
    result = detect_msvc()
    assert result.toolchain is None and "only used on Windows" in result.reason


def test_simulated_installation_gives_toolchain(vs_tree):
    environ, env, bin_dir = vs_tree()
    runner = SimulatedWindows()
    result = msvc.detect_msvc_in(environ, runner, python_platform="win-amd64")
    tc = result.toolchain
    assert tc is not None, result.reason
    assert tc.name == "msvc" and tc.compiler_type == "msvc" and tc.openmp
    assert tc.path == str(bin_dir / "cl.exe")
    assert tc.version == "19.38.33130"
    build_env = dict(tc.build_env)
    assert build_env["INCLUDE"] == env["INCLUDE"]
    assert build_env["LIB"] == env["LIB"]
    assert build_env["PATH"] == env["Path"]
    assert build_env["DISTUTILS_USE_SDK"] == "1"
    assert all(key and not key.startswith("=") for key in build_env)  # banner/drive lines skipped
    for flag in ("/O2", "/openmp", "/fp:precise"):
        assert flag in tc.compile_args
    assert ("/arch:AVX2" in tc.compile_args) == (host_level() == "x86-64-v3")
    # vswhere was asked for an installation with the x64 C++ tools
    vswhere_call = next(c for c in runner.commands if isinstance(c, list) and c[0].endswith("vswhere.exe"))
    assert "Microsoft.VisualStudio.Component.VC.Tools.x86.x64" in vswhere_call
    assert json.loads(tc.identity())["env"] == sorted(
        [["VCTOOLSVERSION", VC_TOOLS], ["WINDOWSSDKVERSION", SDK + "\\"]])


def test_isa_level_maps_to_arch_flag(vs_tree):
    environ, _, _ = vs_tree()
    v3 = msvc.detect_msvc_in(environ, SimulatedWindows(), "win-amd64", level="x86-64-v3").toolchain
    v2 = msvc.detect_msvc_in(environ, SimulatedWindows(), "win-amd64", level="x86-64-v2").toolchain
    assert v3.isa == "x86-64-v3" and "/arch:AVX2" in v3.compile_args
    assert v2.isa == "x86-64" and not any(f.startswith("/arch") for f in v2.compile_args)
    assert v3.identity() != v2.identity()


def test_environment_is_captured_once(vs_tree):
    environ, _, _ = vs_tree()
    runner = SimulatedWindows()
    first = msvc.detect_msvc_in(environ, runner, "win-amd64")
    second = msvc.detect_msvc_in(environ, runner, "win-amd64")
    assert first.toolchain == second.toolchain
    assert runner.cmd_calls == 1


def test_setuptools_accepts_the_captured_environment(vs_tree, monkeypatch):
    # The build child runs setuptools' MSVC compiler; with DISTUTILS_USE_SDK set
    # it must take our captured environment instead of running vcvarsall again.
    try:
        from setuptools._distutils import _msvccompiler as stmsvc
        get_vc_env = stmsvc._get_vc_env
    except (ImportError, AttributeError):
        pytest.skip("this setuptools has no _msvccompiler._get_vc_env")
    environ, env, _ = vs_tree()
    tc = msvc.detect_msvc_in(environ, SimulatedWindows(), "win-amd64").toolchain
    for key, value in tc.build_env:
        monkeypatch.setenv(key, value)
    vc_env = get_vc_env("x86_amd64")
    assert vc_env["include"] == env["INCLUDE"] and vc_env["lib"] == env["LIB"]


def test_developer_prompt_environment_is_used_as_is(vs_tree):
    _, env, bin_dir = vs_tree()
    runner = SimulatedWindows()
    prompt = {"DISTUTILS_USE_SDK": "1", "MSSdk": "1", "PATH": f"{bin_dir};C:\\Windows",
              "INCLUDE": env["INCLUDE"], "LIB": env["LIB"]}
    tc = msvc.detect_msvc_in(prompt, runner, "win-amd64").toolchain
    assert tc is not None and tc.path == str(bin_dir / "cl.exe")
    assert runner.cmd_calls == 0
    assert not any(isinstance(c, list) and c[0].endswith("vswhere.exe") for c in runner.commands)


def test_no_installer_says_what_to_install(tmp_path):
    result = msvc.detect_msvc_in({"ProgramFiles(x86)": str(tmp_path)}, SimulatedWindows(), "win-amd64")
    assert result.toolchain is None
    assert "vswhere.exe" in result.reason and "Visual Studio Build Tools" in result.reason


def test_installation_without_the_needed_tools(vs_tree):
    environ, _, _ = vs_tree()
    result = msvc.detect_msvc_in(environ, SimulatedWindows(), python_platform="win-arm64")
    assert result.toolchain is None
    assert "Microsoft.VisualStudio.Component.VC.Tools.ARM64" in result.reason


def test_vcvarsall_failure_is_reported(vs_tree):
    environ, _, _ = vs_tree(vcvars_fails=True)
    result = msvc.detect_msvc_in(environ, SimulatedWindows(), "win-amd64")
    assert result.toolchain is None
    assert "exit status 1" in result.reason and "Invalid argument" in result.reason
