"""The generated C compiles cleanly everywhere it has to, and vectorises."""
from __future__ import annotations

import importlib.util
import platform
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

import sympy as sp

from codegen_support import (
    ACTIVATION, CORPUS, DTYPES, P, X, have_gcc, libmvec_available, make, production_flags,
)
from heterosymnn.codegen import render_c_module, render_runtime
from heterosymnn.toolchains import flags
from heterosymnn.toolchains.isa import host_level, isa_candidates

# The production flags of each OpenMP mode, and the tests' strict warnings.
STRICT = ["-std=c99", "-Wall", "-Wextra", "-Werror"]
GCC_FLAG_SETS = {
    "openmp-vector": STRICT + production_flags("openmp")[0],
    "no-openmp": STRICT + ["-pedantic"] + production_flags("none")[0],
    "openmp-simd-only": STRICT + production_flags("simd")[0],
}
ZIG_FLAGS = STRICT + list(flags.build_compile_args(
    flags.unix_compile_args(isa_candidates("zig", host_level())[0][1], simd=True)))


def _loop_corpus() -> list:
    """Bodies that once left their loop scalar or slow, beside the corpus."""
    x, p0 = X, P[0]
    minus_abs = sp.Piecewise((-p0 * x, p0 * x >= 0), (p0 * x, True))
    swish = x * sp.Piecewise((1 / (1 + sp.exp(minus_abs)), p0 * x >= 0),
                             (sp.exp(minus_abs) / (1 + sp.exp(minus_abs)), True))
    return [
        # sin and cos of one body go through aliases; in a Piecewise branch they were calls
        # GCC would not if-convert ("control flow in loop").
        make(ACTIVATION, sp.Piecewise((sp.sin(x), sp.And(x > 0, x < 1)), (sp.cos(x), True))),
        make(ACTIVATION, sp.Piecewise((sp.sin(2 * x), x > 0), (sp.cos(2 * x) + sp.sin(x), True))),
        make(ACTIVATION, sp.Piecewise((sp.sin(sp.cos(x)), x > 0), (sp.cos(x), True))),
        make(ACTIVATION, swish),  # the named swish: exp(c ? -u : u) was two exp calls
    ]


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict:
    """kernels_<dtype>.c and runtime_<dtype>.c on disk."""
    root = tmp_path_factory.mktemp("codegen_sources")
    files = {}
    for dtype in DTYPES:
        for kind, text in (("kernels", render_c_module(CORPUS + _loop_corpus(), dtype).source),
                           ("runtime", render_runtime(dtype).source)):
            path = root / f"{kind}_{dtype}.c"
            path.write_text(text)
            files[(kind, dtype)] = path
    return files


def _compile(cmd: list) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _compile_all(commands: list) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        for cmd, proc in zip(commands, pool.map(_compile, commands)):
            assert proc.returncode == 0, f"{' '.join(map(str, cmd))}\n{proc.stderr}"
            assert not proc.stderr.strip(), proc.stderr


@pytest.mark.skipif(not have_gcc(), reason="no gcc on PATH")
@pytest.mark.parametrize("flag_set", sorted(GCC_FLAG_SETS))
def test_gcc_compiles_without_warnings(sources, flag_set, tmp_path):
    commands = [["gcc", *GCC_FLAG_SETS[flag_set], "-c", str(path), "-o",
                 str(tmp_path / (path.stem + ".o"))] for path in sources.values()]
    _compile_all(commands)


@pytest.mark.skipif(not libmvec_available(),
                    reason="needs gcc with glibc's libmvec on an AVX2 x86-64 "
                           "(without it loops that call libm stay scalar)")
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_row_loop_is_vectorised(sources, dtype, tmp_path):
    """GCC's own report: each row function's element loop uses full-width vectors.

    -fno-ipa-icf keeps identical functions (several ``g*0`` derivatives)
    from being folded into one, which would hide them from the report. The element
    loop itself is checked, not any loop of the function (the padding copies always
    vectorise).
    """
    src = sources[("kernels", dtype)]
    report = tmp_path / "vec.txt"
    width = "32 byte"  # AVX2
    proc = _compile(["gcc", *GCC_FLAG_SETS["openmp-vector"], "-fno-ipa-icf",
                     f"-fopt-info-vec-optimized={report}", "-c", str(src),
                     "-o", str(tmp_path / "k.o")])
    assert proc.returncode == 0, proc.stderr
    lines = src.read_text().splitlines()
    starts = [(i + 1, m.group(1)) for i, l in enumerate(lines)
              if (m := re.match(r"void (hs_\w+)\(", l))]
    loops = [i + 1 for i, l in enumerate(lines) if re.search(r"for \(int64_t i = 0; i < \(hs_count", l)]
    assert len(loops) >= len(starts)  # one element loop per row function
    reported = {int(entry.split(":")[1]) for entry in report.read_text().splitlines()
                if f"vectorized using {width}" in entry}
    missing = [max((s for s in starts if s[0] <= line), default=(0, None))[1]
               for line in loops if not {line, line + 1} & reported]
    assert not missing, f"element loops not vectorised ({width}): {missing}"


def _zig_available() -> bool:
    return importlib.util.find_spec("ziglang") is not None


@pytest.mark.skipif(not _zig_available(), reason="ziglang (pip install ziglang) not installed")
def test_windows_cross_compile_with_zig(sources, tmp_path):
    """Portability: zig's clang for x86_64-windows-gnu with zig's production flags
    (no OpenMP runtime, omp simd), strict warnings."""
    zig = [sys.executable, "-m", "ziglang", "cc", "-target", "x86_64-windows-gnu"]
    commands = [[*zig, *ZIG_FLAGS, "-c", str(path),
                 "-o", str(tmp_path / (path.stem + ".o"))] for path in sources.values()]
    _compile_all(commands)


def _objdump() -> str | None:
    return shutil.which("objdump")


@pytest.mark.skipif(_objdump() is None, reason="objdump not installed")
@pytest.mark.skipif(not libmvec_available(),
                    reason="libmvec needs glibc on x86-64 with AVX2/FMA and gcc")
@pytest.mark.parametrize("dtype", DTYPES)
def test_built_module_calls_libmvec(built, dtype):
    """The cffi-built kernels call the AVX2 libmvec variant of every function."""
    dis = subprocess.run([_objdump(), "-d", "--no-show-raw-insn", built[dtype].kernels.path],
                         capture_output=True, text=True, timeout=120).stdout
    called = set(re.findall(r"call\s+\S+\s+<(_ZGV\w+)@plt>", dis))
    lanes, suffix = ("8", "f") if dtype == "float32" else ("4", "")
    expected = {f"_ZGVdN{lanes}{'vv' if f == 'pow' else 'v'}_{f}{suffix}" for f in (
        "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "tanh",
        "asinh", "acosh", "atanh", "exp", "log", "pow", "erf", "erfc")}
    assert expected <= called, f"missing SIMD calls: {sorted(expected - called)}"
    # no scalar sincos: sin and cos of one argument stayed two vector calls
    assert not re.search(r"call\s+\S+\s+<sincosf?@plt>", dis)


@pytest.mark.skipif(not have_gcc() or _objdump() is None or platform.machine() != "x86_64",
                    reason="needs gcc and objdump on x86-64")
@pytest.mark.parametrize("dtype", DTYPES)
def test_contraction_stays_off_whatever_the_flags(sources, dtype, tmp_path):
    """The source's pragma keeps a*b + c unfused even in a build that asks for fma
    (-ffp-contract=fast on an FMA target), as MSVC's /fp:precise may."""
    args = [("-ffp-contract=fast" if a.startswith("-ffp-contract") else a) for a in production_flags()[0]]
    args += isa_candidates("gcc", "x86-64-v3")[0][1]
    obj = tmp_path / "k.o"
    proc = _compile(["gcc", *args, "-c", str(sources[("kernels", dtype)]), "-o", str(obj)])
    assert proc.returncode == 0, proc.stderr
    dis = subprocess.run([_objdump(), "-d", "--no-show-raw-insn", str(obj)],
                         capture_output=True, text=True, timeout=120).stdout
    fused = re.findall(r"\bvfn?m(?:add|sub)\w*", dis)
    assert not fused, f"fused multiply-adds in the kernels: {sorted(set(fused))}"


@pytest.mark.skipif(not have_gcc(), reason="no gcc on PATH")
def test_runtime_without_avx_or_openmp(sources, tmp_path):
    """The driver's plain-C block transposes (no AVX) and its serial paths (no OpenMP)
    compile as strict, pedantic C99 for a baseline x86-64; with AVX, its intrinsics do too."""
    commands = []
    for dtype in DTYPES:
        path = sources[("runtime", dtype)]
        commands.append(["gcc", *STRICT, "-pedantic", "-O2", "-march=x86-64", "-c", str(path),
                         "-o", str(tmp_path / f"base_{dtype}.o")])
        commands.append(["gcc", *STRICT, "-pedantic", "-O2", "-mavx", "-c", str(path),
                         "-o", str(tmp_path / f"avx_{dtype}.o")])
    _compile_all(commands)


@pytest.mark.skipif(not _zig_available(), reason="ziglang (pip install ziglang) not installed")
@pytest.mark.parametrize("dtype", DTYPES)
def test_runtime_cross_compiles_for_arm64(sources, dtype):
    """No x86 intrinsics where there is no AVX: the plain block transposes, for aarch64."""
    from heterosymnn.toolchains import zig_cross_compile_check

    zig_cross_compile_check(sources[("runtime", dtype)].read_text(), target="aarch64-linux-gnu",
                            extra_args=["-Wextra"])
