"""Zig from the ziglang package: a real build, and the cross-compile check."""
from __future__ import annotations

import importlib.util
import os

import pytest

from heterosymnn.config import override
from heterosymnn.errors import JITCompilationError
from heterosymnn.toolchains import find_toolchain, host_level, zig_cross_compile_check

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ziglang") is None,
                                reason="the ziglang package is not installed (pip install ziglang)")

SOURCE = r"""
#include <math.h>
double root_plus_one(double x) { return sqrt(x) + 1.0; }
double sum_sin(int n) {
    double s = 0.0;
    for (int i = 0; i < n; i++) s += sin(0.001 * i);
    return s;
}
int openmp_macro(void) {
#ifdef _OPENMP
    return _OPENMP;
#else
    return 0;
#endif
}
"""
CDEF = "double root_plus_one(double x); double sum_sin(int n); int openmp_macro(void);"


def test_forced_zig_builds_loads_and_runs(fresh_caches, build_and_call):
    with override(toolchain="zig"):
        tc = find_toolchain()
    assert tc.name == "zig" and tc.openmp is False
    assert tc.isa == host_level()
    # an explicit CPU on both steps: zig would otherwise target this machine's CPU
    cpu = [f for f in tc.compile_args if f.startswith("-mcpu=")]
    assert len(cpu) == 1 and cpu[0] in tc.link_args and "native" not in cpu[0]
    assert "-O2" in tc.link_args  # or the first link builds zig's runtime unoptimised
    env = dict(tc.build_env)
    assert env["CC"].endswith(" cc") and env["LDSHARED"].endswith(" cc -shared")
    cwd, env_before = os.getcwd(), dict(os.environ)
    out, log = build_and_call(tc, CDEF, SOURCE,
                              {"root_plus_one": [16.0], "sum_sin": [1000], "openmp_macro": []})
    assert os.getcwd() == cwd and dict(os.environ) == env_before
    assert out["root_plus_one"] == 5.0
    import math
    assert out["sum_sin"] == pytest.approx(sum(math.sin(0.001 * i) for i in range(1000)), rel=1e-12)
    assert out["openmp_macro"] == 0
    assert "zig" in log  # setuptools really invoked zig


VALID_C99 = r"""
#include <math.h>
#include <stdint.h>
#include <stddef.h>
double kernel(const double *x, size_t n, int32_t k) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += tanh(x[i]) * (double)k;
    return s;
}
"""


def test_cross_compile_accepts_portable_c99():
    zig_cross_compile_check(VALID_C99)
    zig_cross_compile_check(VALID_C99, target="aarch64-linux-gnu")


@pytest.mark.parametrize("source, expected", [
    ("int f(int x) { typeof(x) y = x; return y; }\n", "typeof"),          # GNU keyword, not C99
    ("#include <sys/mman.h>\nint f(void) { return 0; }\n", "sys/mman.h"),  # POSIX-only header
    ("#include <math.h>\ndouble f(double x) { return x * M_PI; }\n", "M_PI"),  # not ISO C
    ("int f(int x) { int unused; return x; }\n", "unused"),                # -Wall -Werror
])
def test_cross_compile_rejects_non_portable_code(source, expected):
    with pytest.raises(JITCompilationError) as info:
        zig_cross_compile_check(source)
    err = info.value
    assert expected in err.compiler_output
    assert err.source_path and os.path.isfile(err.source_path)
    with open(err.source_path) as fh:
        assert fh.read() == source


def test_zig_cache_location(tmp_path):
    from heterosymnn.toolchains.zig import zig_cache_env

    assert zig_cache_env({"ZIG_GLOBAL_CACHE_DIR": str(tmp_path)}) == ()
    assert zig_cache_env({"HOME": str(tmp_path), "LOCALAPPDATA": str(tmp_path)}) == ()
    # no usable home (containers, sandboxes): a per-user folder under the temp dir
    env = dict(zig_cache_env({}))
    assert set(env) == {"ZIG_GLOBAL_CACHE_DIR", "ZIG_LOCAL_CACHE_DIR"}
    assert "heterosymnn-zig-" in env["ZIG_GLOBAL_CACHE_DIR"]
