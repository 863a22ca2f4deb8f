"""GCC/Clang detection against the compilers really installed here."""
from __future__ import annotations

import glob
import os
import shutil
import stat
import subprocess
import sys

import pytest

from heterosymnn.config import override
from heterosymnn.errors import ToolchainNotFoundError
from heterosymnn.toolchains import detect_gcc_clang, find_toolchain, host_level

GCC = shutil.which("gcc")
needs_gcc = pytest.mark.skipif(GCC is None or sys.platform == "win32", reason="needs gcc on a POSIX system")

OMP_SOURCE = r"""
#include <omp.h>
int max_threads(void) { return omp_get_max_threads(); }
int team_size(void) {
    int n = 0;
#pragma omp parallel reduction(+:n)
    n += 1;
    return n;
}
int openmp_macro(void) {
#ifdef _OPENMP
    return _OPENMP;
#else
    return 0;
#endif
}
"""
OMP_CDEF = "int max_threads(void); int team_size(void); int openmp_macro(void);"


def _executable(path, text):
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(path)


@needs_gcc
def test_gcc_detected_with_real_version_openmp_and_isa(fresh_caches):
    with override(cc=GCC):
        result = detect_gcc_clang()
    tc = result.toolchain
    assert tc is not None, result.reason
    assert tc.name == "gcc"
    real = subprocess.run([GCC, "-dumpfullversion", "-dumpversion"], capture_output=True,
                          text=True).stdout.strip()
    assert tc.version == real
    assert tc.openmp is True
    assert tc.isa == host_level()
    assert "-O3" in tc.compile_args and "-fno-math-errno" in tc.compile_args
    assert "-fopenmp" in tc.compile_args and "-fopenmp" in tc.link_args
    assert not any(f == "-ffast-math" or "native" in f for f in tc.compile_args + tc.link_args)
    if tc.isa.startswith("x86-64-v"):
        assert f"-march={tc.isa}" in tc.compile_args
    env = dict(tc.build_env)
    assert env["CC"] == GCC and env["LDSHARED"].split() == [GCC, "-shared"]
    has_libmvec = bool(glob.glob("/lib*/*/libmvec.so*") + glob.glob("/usr/lib*/*/libmvec.so*")
                       + glob.glob("/lib*/libmvec.so*"))
    assert ("-lmvec" in tc.link_args) == (sys.platform.startswith("linux") and has_libmvec)


@needs_gcc
def test_gcc_openmp_module_runs_parallel(fresh_caches, build_and_call):
    with override(toolchain="gcc"):
        tc = find_toolchain()
    cwd, env_before = os.getcwd(), dict(os.environ)
    out, _ = build_and_call(tc, OMP_CDEF, OMP_SOURCE,
                            {"max_threads": [], "team_size": [], "openmp_macro": []},
                            env_drop=("OMP_NUM_THREADS", "OMP_THREAD_LIMIT"))
    assert os.getcwd() == cwd and dict(os.environ) == env_before
    assert out["openmp_macro"] >= 201107  # OpenMP 3.1 or newer
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert out["max_threads"] == cpus
    assert out["team_size"] == out["max_threads"]
    if cpus > 1:
        assert out["max_threads"] > 1


@pytest.mark.parametrize("kind", ["false", "text", "executable-text", "missing"])
def test_explicit_cc_that_is_not_a_compiler_raises_naming_it(fresh_caches, tmp_path, kind):
    if kind == "false":
        bad = shutil.which("false") or pytest.skip("no `false` command")
    elif kind == "text":
        bad = tmp_path / "notes.txt"
        bad.write_text("not a compiler\n")
        bad = str(bad)
    elif kind == "executable-text":
        bad = _executable(tmp_path / "fakecc", "#!/bin/sh\necho hello\n")
    else:
        bad = str(tmp_path / "no-such-cc")
    with override(cc=bad, toolchain=None):
        with pytest.raises(ToolchainNotFoundError) as info:
            find_toolchain()
    assert bad in str(info.value)
    assert "HETEROSYMNN_CC" in str(info.value)


@needs_gcc
def test_failed_openmp_probe_gives_serial_toolchain(fresh_caches, tmp_path):
    # A compiler whose OpenMP is broken: gcc that refuses -fopenmp.
    wrapper = _executable(tmp_path / "gcc-no-omp", f"""#!/bin/sh
for a in "$@"; do
  if [ "$a" = "-fopenmp" ]; then echo "gcc-no-omp: -fopenmp unsupported" >&2; exit 1; fi
done
exec {GCC} "$@"
""")
    with override(cc=wrapper):
        tc = find_toolchain()
        result = detect_gcc_clang()
    assert tc.name == "gcc" and tc.path == wrapper
    assert tc.openmp is False
    assert "-fopenmp" not in tc.compile_args and "-fopenmp" not in tc.link_args
    assert "-fopenmp-simd" in tc.compile_args
    assert "OpenMP unavailable" in result.reason and "-fopenmp unsupported" in result.reason


@needs_gcc
def test_explicit_cc_with_arguments_is_kept(fresh_caches):
    with override(cc=f"{GCC} -DHETEROSYMNN_PROBE=1"):
        tc = find_toolchain()
    assert tc.path == f"{GCC} -DHETEROSYMNN_PROBE=1"
    assert dict(tc.build_env)["CC"] == tc.path
    with override(cc=GCC):
        plain = find_toolchain()
    assert plain.identity() != tc.identity()


@needs_gcc
def test_forced_family_mismatch_is_an_error(fresh_caches):
    with override(cc=GCC, toolchain="clang"):
        with pytest.raises(ToolchainNotFoundError) as info:
            find_toolchain()
    assert "not clang" in str(info.value)


@needs_gcc
def test_compiler_without_x86_64_level_names_falls_back(fresh_caches, tmp_path):
    if host_level() != "x86-64-v3":
        pytest.skip("needs an x86-64-v3 CPU")
    # Like GCC < 11, which predates -march=x86-64-v3.
    old = _executable(tmp_path / "gcc-10ish", f"""#!/bin/sh
for a in "$@"; do
  case "$a" in -march=x86-64-v*) echo "error: bad value '$a' for '-march='" >&2; exit 1;; esac
done
exec {GCC} "$@"
""")
    with override(cc=old):
        tc = find_toolchain()
    assert tc.isa == "x86-64-v3" and tc.openmp is True
    assert "-march=x86-64" in tc.compile_args
    for flag in ("-mavx2", "-mfma", "-mbmi2", "-mf16c", "-mmovbe", "-mlzcnt"):
        assert flag in tc.compile_args
