"""Generated C kernels vs a hand-written C reference, float32 1024x1024.

Eight activations interleaved over the rows (row r uses activation r % 8),
run through the generic driver ``hs_run_f32``; the reference is hand-written
C with one homogeneous loop per row (a switch per row, not per element),
OpenMP over rows and the same libmvec declarations and flags. Prints
ns/element forward and backward (medians of interleaved runs) and the ratio.

Usage: python benchmarks/c_kernels_probe.py [--repeats N] [--threads N]
Needs gcc, glibc's libmvec and an x86-64-v3 (AVX2/FMA) CPU.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import sympy as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from heterosymnn.codegen import render_c_module, render_runtime  # noqa: E402
from heterosymnn.symbolic.structure import (  # noqa: E402
    ACTIVATION, VARIABLES, Structure, slot_symbols, structure_key,
)

ROWS, COLS = 1024, 1024
X = VARIABLES[ACTIVATION][0]
P0, P1 = slot_symbols(2)
PARAMS = (1.5, 0.7)

COMPILE = ["-O3", "-march=x86-64-v3", "-fno-math-errno", "-fno-trapping-math",
           "-ffp-contract=off", "-fopenmp", "-DHS_USE_LIBMVEC"]
OPTIONS = dict(extra_compile_args=COMPILE, extra_link_args=["-fopenmp"], libraries=["mvec", "m"])


def structures() -> list[Structure]:
    x = X
    forms = [
        (sp.tanh(x), None),
        (sp.sin(x), None),
        (sp.Max(0, x), sp.Heaviside(x, 0)),
        (1 / (1 + sp.exp(-x)), None),
        (sp.log(1 + sp.exp(x)), None),
        (sp.exp(-x**2), None),
        (P0 * sp.tanh(P1 * x), None),
        (sp.Max(x, sp.Float("0.01") * x), sp.Piecewise((1, x > 0), (sp.Float("0.01"), True))),
    ]
    out = []
    for expr, d in forms:
        d = sp.diff(expr, x) if d is None else d
        n = len((expr.free_symbols | d.free_symbols) & {P0, P1})
        out.append(Structure(structure_key(ACTIVATION, expr), ACTIVATION, expr, d, n))
    return out


REFERENCE_C = r"""
#include <math.h>
#include <stdint.h>
#include <omp.h>
__attribute__((simd("notinbranch"))) float tanhf(float);
__attribute__((simd("notinbranch"))) float sinf(float);
__attribute__((simd("notinbranch"))) float cosf(float);
__attribute__((simd("notinbranch"))) float expf(float);
__attribute__((simd("notinbranch"))) float logf(float);

static void fwd_row(int kind, int64_t n, const float *restrict a, float *restrict o,
                    float p0, float p1)
{
    int64_t i;
    switch (kind) {
    case 0: for (i = 0; i < n; ++i) o[i] = tanhf(a[i]); break;
    case 1: for (i = 0; i < n; ++i) o[i] = sinf(a[i]); break;
    case 2: for (i = 0; i < n; ++i) o[i] = a[i] > 0.0f ? a[i] : 0.0f; break;
    case 3: for (i = 0; i < n; ++i) o[i] = 1.0f / (1.0f + expf(-a[i])); break;
    case 4: for (i = 0; i < n; ++i) o[i] = logf(1.0f + expf(a[i])); break;
    case 5: for (i = 0; i < n; ++i) o[i] = expf(-a[i] * a[i]); break;
    case 6: for (i = 0; i < n; ++i) o[i] = p0 * tanhf(p1 * a[i]); break;
    default: for (i = 0; i < n; ++i) o[i] = a[i] > 0.0f ? a[i] : 0.01f * a[i]; break;
    }
}

static void bwd_row(int kind, int64_t n, const float *restrict a, const float *restrict g,
                    float *restrict o, float p0, float p1)
{
    int64_t i;
    switch (kind) {
    case 0: for (i = 0; i < n; ++i) { float t = tanhf(a[i]); o[i] = g[i] * (1.0f - t * t); } break;
    case 1: for (i = 0; i < n; ++i) o[i] = g[i] * cosf(a[i]); break;
    case 2: for (i = 0; i < n; ++i) o[i] = a[i] > 0.0f ? g[i] : 0.0f; break;
    case 3: for (i = 0; i < n; ++i) { float s = 1.0f / (1.0f + expf(-a[i])); o[i] = g[i] * s * (1.0f - s); } break;
    case 4: for (i = 0; i < n; ++i) o[i] = g[i] / (1.0f + expf(-a[i])); break;
    case 5: for (i = 0; i < n; ++i) o[i] = g[i] * -2.0f * a[i] * expf(-a[i] * a[i]); break;
    case 6: for (i = 0; i < n; ++i) { float t = tanhf(p1 * a[i]); o[i] = g[i] * p0 * p1 * (1.0f - t * t); } break;
    default: for (i = 0; i < n; ++i) o[i] = g[i] * (a[i] > 0.0f ? 1.0f : 0.01f); break;
    }
}

void ref_run(int backward, int64_t rows, int64_t cols, const float *a, const float *g,
             float *out, const double *params, int nthreads)
{
    int64_t r;
    const int nt = nthreads > 0 ? nthreads : omp_get_max_threads();
#pragma omp parallel for schedule(static) num_threads(nt)
    for (r = 0; r < rows; ++r) {
        const int64_t off = r * cols;
        const float p0 = (float)params[2 * r], p1 = (float)params[2 * r + 1];
        if (backward) bwd_row((int)(r % 8), cols, a + off, g + off, out + off, p0, p1);
        else fwd_row((int)(r % 8), cols, a + off, out + off, p0, p1);
    }
}
"""
REFERENCE_CDEF = ("void ref_run(int backward, int64_t rows, int64_t cols, const float *a, "
                  "const float *g, float *out, const double *params, int nthreads);")

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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=41)
    parser.add_argument("--threads", type=int, default=0, help="0 = OpenMP default")
    args = parser.parse_args(argv)

    structs = structures()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cm = render_c_module(structs, "float32")
        rs = render_runtime("float32")
        kernels = build(tmp, "_probe_kernels", cm.cdef, cm.source)
        runtime = build(tmp, "_probe_runtime", rs.cdef, rs.source)
        reference = build(tmp, "_probe_reference", REFERENCE_CDEF, REFERENCE_C)

        rng = np.random.default_rng(0)
        a = rng.normal(0, 2, (ROWS, COLS)).astype(np.float32)
        g = rng.normal(0, 1, (ROWS, COLS)).astype(np.float32)
        params = np.tile(np.array(PARAMS), (ROWS, 1))
        out_gen, out_ref = np.empty_like(a), np.empty_like(a)

        rffi, rlib = runtime.ffi, runtime.lib
        fns = {w: rffi.new("hs_row_fn_f32[]", ROWS) for w in (0, 1)}
        for r in range(ROWS):
            pair = cm.functions[structs[r % 8].key]
            for w in (0, 1):
                addr = kernels.ffi.cast("uintptr_t", kernels.ffi.addressof(kernels.lib, pair[w]))
                fns[w][r] = rffi.cast("hs_row_fn_f32", int(addr))
        fp = lambda ffi, arr, t="float *": ffi.cast(t, ffi.from_buffer(arr))  # noqa: E731
        pa, pg, po, pp = fp(rffi, a), fp(rffi, g), fp(rffi, out_gen), fp(rffi, params, "double *")
        qf = reference.ffi
        qa, qg, qo, qp = fp(qf, a), fp(qf, g), fp(qf, out_ref), fp(qf, params, "double *")

        def gen(w):
            rlib.hs_run_f32(fns[w], ROWS, COLS, pa, rffi.NULL, pg if w else rffi.NULL, po, pp, 2,
                            args.threads)

        def ref(w):
            reference.lib.ref_run(w, ROWS, COLS, qa, qg, qo, qp, args.threads)

        for w in (0, 1):  # correctness first, and warm-up
            gen(w), ref(w)
            np.testing.assert_allclose(out_gen, out_ref, rtol=2e-5, atol=2e-6)

        times = {(k, w): [] for k in ("gen", "ref") for w in (0, 1)}
        for _ in range(args.repeats):
            for w in (0, 1):
                for kind, fn in (("gen", gen), ("ref", ref)):
                    t0 = time.perf_counter_ns()
                    fn(w)
                    times[(kind, w)].append(time.perf_counter_ns() - t0)

    n = ROWS * COLS
    print(f"float32 {ROWS}x{COLS}, 8 activations interleaved, threads="
          f"{args.threads or 'default'}, median of {args.repeats}")
    for w, label in ((0, "forward"), (1, "backward")):
        g_ns = statistics.median(times[("gen", w)]) / n
        r_ns = statistics.median(times[("ref", w)]) / n
        print(f"{label:9s} generated {g_ns:6.3f} ns/el   hand-written {r_ns:6.3f} ns/el   "
              f"ratio {g_ns / r_ns:5.2f}")


if __name__ == "__main__":
    main()
