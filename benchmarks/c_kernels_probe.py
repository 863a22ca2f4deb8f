"""Generated row functions against hand-written loops, formula by formula.

Where ``cpu_peers.py`` times whole layers (driver, threads, Python call), this probe
times one row function at a time, single-threaded, with a C timer: each generated row
function (forward and backward) against the loop a careful C programmer writes for the
same formula, with the same flags, libmvec declarations and inputs. A ratio far from 1
points at the generated C of that formula; read it with ``python -m heterosymnn show``
and GCC's ``-fopt-info-vec-missed``.

Two workloads: ``named``, the 8 activations of ``cpu_peers.py`` (the library's stable
sigmoid and softplus against the reference of ``peer_kernels.py``), and ``written``,
8 formulas as a user spells them out (relu as Max, sigmoid, tanh, sin, gelu in erf form,
swish, log(1+exp), affine).

Usage: python benchmarks/c_kernels_probe.py [--workload named|written] [--dtype D]
       [--cols N] [--rows N] [--only NAME ...]
Needs gcc, glibc's libmvec and an x86-64-v3 (AVX2/FMA) CPU.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

#: The flags of the CPU backend with GCC on an x86-64-v3 machine.
COMPILE = ["-O3", "-march=x86-64-v3", "-mtune=generic", "-fno-math-errno", "-fno-trapping-math",
           "-ffp-contract=off", "-fopenmp", "-g0", "-DHS_USE_LIBMVEC"]
OPTIONS = dict(extra_compile_args=COMPILE, extra_link_args=["-fopenmp"], libraries=["mvec", "m"])

WRITTEN = ["Max(0, num)", "1/(1 + exp(-num))", "tanh(num)", "sin(num)",
           "0.5*num*(1 + erf(num/sqrt(2)))", "num/(1 + exp(-num))", "log(1 + exp(num))",
           ("a*num + b", {"a": 1.5, "b": 0.7})]
#: The hand-written loops of the written-out formulas (T, EXP ... as in peer_kernels).
WRITTEN_REFERENCE = r"""
#include <math.h>
#include <stdint.h>
__attribute__((simd("notinbranch"))) T TANH(T);
__attribute__((simd("notinbranch"))) T SIN(T);
__attribute__((simd("notinbranch"))) T COS(T);
__attribute__((simd("notinbranch"))) T EXP(T);
__attribute__((simd("notinbranch"))) T LOG(T);
__attribute__((simd("notinbranch"))) T ERF(T);
#define RSQRT2 ((T)0.70710678118654752)
#define RSQRT2PI ((T)0.39894228040143268)
static T sigmoid(T x) { return 1 / (1 + EXP(-x)); }

static void fwd_row(int kind, int64_t n, const T *restrict a, T *restrict o)
{
    int64_t i;
    switch (kind) {
    case 0: for (i = 0; i < n; ++i) o[i] = a[i] > 0 ? a[i] : 0; break;
    case 1: for (i = 0; i < n; ++i) o[i] = sigmoid(a[i]); break;
    case 2: for (i = 0; i < n; ++i) o[i] = TANH(a[i]); break;
    case 3: for (i = 0; i < n; ++i) o[i] = SIN(a[i]); break;
    case 4: for (i = 0; i < n; ++i) o[i] = (T)0.5 * a[i] * (1 + ERF(a[i] * RSQRT2)); break;
    case 5: for (i = 0; i < n; ++i) o[i] = a[i] * sigmoid(a[i]); break;
    case 6: for (i = 0; i < n; ++i) o[i] = LOG(1 + EXP(a[i])); break;
    default: for (i = 0; i < n; ++i) o[i] = (T)1.5 * a[i] + (T)0.7; break;
    }
}

static void bwd_row(int kind, int64_t n, const T *restrict a, const T *restrict g, T *restrict o)
{
    int64_t i;
    switch (kind) {
    case 0: for (i = 0; i < n; ++i) o[i] = a[i] > 0 ? g[i] : 0; break;
    case 1: for (i = 0; i < n; ++i) { T s = sigmoid(a[i]); o[i] = g[i] * s * (1 - s); } break;
    case 2: for (i = 0; i < n; ++i) { T t = TANH(a[i]); o[i] = g[i] * (1 - t * t); } break;
    case 3: for (i = 0; i < n; ++i) o[i] = g[i] * COS(a[i]); break;
    case 4: for (i = 0; i < n; ++i)
                o[i] = g[i] * ((T)0.5 * (1 + ERF(a[i] * RSQRT2))
                               + a[i] * EXP((T)-0.5 * a[i] * a[i]) * RSQRT2PI); break;
    case 5: for (i = 0; i < n; ++i) { T s = sigmoid(a[i]); o[i] = g[i] * (s + a[i] * s * (1 - s)); } break;
    case 6: for (i = 0; i < n; ++i) o[i] = g[i] * sigmoid(a[i]); break;
    default: for (i = 0; i < n; ++i) o[i] = g[i] * (T)1.5; break;
    }
}
"""
#: Times ``reps`` passes over ``rows`` rows of ``n`` elements; ns per element.
HARNESS = r"""
#include <time.h>
typedef void (*probe_row_fn)(int64_t, const T *, const T *, const T *, T *, const double *);
static double probe_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}
double probe_generated(uintptr_t fn, int reps, int64_t rows, int64_t n, const T *a, const T *g,
                       T *out, const double *p)
{
    const probe_row_fn f = (probe_row_fn)fn;
    const double start = probe_now();
    for (int r = 0; r < reps; ++r)
        for (int64_t k = 0; k < rows; ++k)
            f(n, a + k * n, 0, g ? g + k * n : 0, out + k * n, p);
    return (probe_now() - start) / ((double)reps * rows * n);
}
double probe_reference(int kind, int backward, int reps, int64_t rows, int64_t n, const T *a,
                       const T *g, T *out)
{
    const double start = probe_now();
    for (int r = 0; r < reps; ++r)
        for (int64_t k = 0; k < rows; ++k) {
            if (backward)
                bwd_row(kind, n, a + k * n, g + k * n, out + k * n);
            else
                fwd_row(kind, n, a + k * n, out + k * n);
        }
    return (probe_now() - start) / ((double)reps * rows * n);
}
"""
_NAMES = {"float32": ("float", "f"), "float64": ("double", "")}

_BUILD = textwrap.dedent("""
    import json, sys, cffi
    spec = json.load(open(sys.argv[1]))
    ffi = cffi.FFI(); ffi.cdef(spec["cdef"])
    ffi.set_source(spec["name"], spec["source"], **spec["options"])
    print(ffi.compile(tmpdir=spec["tmpdir"]))
""")


def build(workdir: Path, name: str, cdef: str, source: str):
    """cffi build in a child process (cffi changes the cwd), then load."""
    spec = workdir / f"{name}.json"
    spec.write_text(json.dumps(dict(name=name, cdef=cdef, source=source, options=OPTIONS,
                                    tmpdir=str(workdir))))
    proc = subprocess.run([sys.executable, "-c", _BUILD, str(spec)], cwd=workdir,
                          capture_output=True, text=True, check=True)
    path = proc.stdout.strip().splitlines()[-1]
    mspec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(mspec)
    mspec.loader.exec_module(module)
    return module


def spell(reference: str, suffix: str) -> str:
    """The reference C with its math placeholders named for the dtype (``EXP`` -> ``expf``)."""
    for name in ("TANH", "SIN", "COS", "EXP", "LOG1P", "LOG", "FABS", "ERF"):
        reference = reference.replace(name, name.lower() + suffix)
    return reference


def workload(name: str):
    """(configs, reference C with placeholders) of a workload."""
    if name == "written":
        return WRITTEN, WRITTEN_REFERENCE
    import peer_kernels
    from cpu_peers import CONFIGS
    return CONFIGS, peer_kernels._REFERENCE.replace("#include <omp.h>", "")


def probe(workload_name: str, dtype: str, rows: int, cols: int, only, reps: int = 20,
          rounds: int = 7) -> None:
    from heterosymnn.codegen import render_c_module
    from heterosymnn.codegen.c_exports import exported_functions
    from heterosymnn.symbolic.layer import analyze

    configs, reference = workload(workload_name)
    layer = analyze(tuple(configs))
    plan = layer.plan
    module = render_c_module(list(layer.structures), dtype)
    ctype, suffix = _NAMES[dtype]
    source = (module.source + f"\n#undef T\n#define T {ctype}\n" + spell(reference, suffix)
              + HARNESS)
    cdef = module.cdef + (
        f"double probe_generated(uintptr_t fn, int reps, int64_t rows, int64_t n, const {ctype} *a, "
        f"const {ctype} *g, {ctype} *out, const double *p);\n"
        f"double probe_reference(int kind, int backward, int reps, int64_t rows, int64_t n, "
        f"const {ctype} *a, const {ctype} *g, {ctype} *out);")
    workdir = Path(tempfile.mkdtemp(prefix="heterosymnn-probe-"))
    name = f"_probe_{dtype}_{hashlib.sha256(source.encode()).hexdigest()[:10]}"
    built = build(workdir, name, cdef, source)
    ffi, lib = built.ffi, built.lib

    rng = np.random.default_rng(0)
    a = (rng.standard_normal((rows, cols)) * 2).astype(dtype)
    g = rng.standard_normal((rows, cols)).astype(dtype)
    got, want = np.empty_like(a), np.empty_like(a)

    def pointer(array, kind=f"{ctype} *"):
        return ffi.cast(kind, ffi.from_buffer(array))

    pa, pg, pgot, pwant = pointer(a), pointer(g), pointer(got), pointer(want)
    tolerance = 2e-5 if dtype == "float32" else 1e-12
    print(f"{workload_name} {dtype}, rows of {cols}, one thread, ns/element "
          f"(median of {rounds}; x = generated / hand-written)")
    for kind, config in enumerate(configs):
        text = config if isinstance(config, str) else config[0]
        if only and text not in only:
            continue
        forward, backward = module.functions[plan.structure_keys[plan.node_structure[kind]]]
        params = np.asarray(plan.node_values[kind], dtype=np.float64)
        pp = pointer(params, "double *") if params.size else ffi.NULL
        cells = []
        for backward_pass, fn in ((0, forward), (1, backward)):
            address = exported_functions(built)[fn]
            mine, theirs = [], []
            for _ in range(rounds):  # interleaved, so drift hits both alike
                mine.append(lib.probe_generated(address, reps, rows, cols, pa,
                                                pg if backward_pass else ffi.NULL, pgot, pp))
                theirs.append(lib.probe_reference(kind, backward_pass, reps, rows, cols, pa, pg, pwant))
            error = float(np.max(np.abs(got - want) / (1 + np.abs(want))))
            flag = "" if error <= tolerance else f" DIFFERS by {error:.1e}"
            m, t = statistics.median(mine), statistics.median(theirs)
            cells.append(f"{'bwd' if backward_pass else 'fwd'} {m:6.3f} vs {t:6.3f} ({m / t:4.2f}x){flag}")
        print(f"  {text[:32]:32s} " + "   ".join(cells), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=("named", "written", "both"), default="both")
    parser.add_argument("--dtype", choices=("float32", "float64", "both"), default="both")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--cols", type=int, default=1024)
    parser.add_argument("--only", nargs="*", help="formulas to probe (as written in the workload)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    for name in (("named", "written") if args.workload == "both" else (args.workload,)):
        for dtype in (("float32", "float64") if args.dtype == "both" else (args.dtype,)):
            probe(name, dtype, args.rows, args.cols, args.only)


if __name__ == "__main__":
    main()
