"""Shared pieces of the codegen tests (imported by conftest and the tests): the expression corpus, NumPy
references, C compiler helpers and a minimal cffi build (the real cached build
backend lives elsewhere; this one only has to be isolated and correct)."""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, List, Sequence, Tuple

import numpy as np
import scipy.special  # noqa: F401  (lambdify's "scipy" module needs it importable)
import sympy as sp
from heterosymnn.codegen.c_exports import exported_functions
from heterosymnn.codegen.c_rows import CDEF_PARAMS, CGRAD_CDEF_PARAMS
from heterosymnn.codegen.c_runtime import SPAN_ELEMENTS
from heterosymnn.symbolic.grammar import expm1, log1p
from heterosymnn.symbolic.structure import (
    ACTIVATION, LOSS, VARIABLES, Structure, slot_symbols, structure_key,
)
from heterosymnn.toolchains import flags
from heterosymnn.toolchains.isa import host_level, isa_candidates

X = VARIABLES[ACTIVATION][0]
YP, YT = VARIABLES[LOSS]
P = slot_symbols(4)
DTYPES = ("float32", "float64")


# -- corpus ------------------------------------------------------------------
def make(mode: str, expr: sp.Expr, derivative: sp.Expr | None = None,
         n_slots: int | None = None) -> Structure:
    """A Structure built directly with SymPy (the parser is not needed here)."""
    var = X if mode == ACTIVATION else YP
    if derivative is None:
        derivative = sp.diff(expr, var)
    if n_slots is None:
        used = (expr.free_symbols | derivative.free_symbols) & set(P)
        n_slots = 1 + max((int(s.name[1:]) for s in used), default=-1)
    return Structure(structure_key(mode, expr), mode, expr, derivative, n_slots)


def _corpus() -> List[Structure]:
    x, yp, yt = X, YP, YT
    p0, p1, p2, _ = P
    pw = sp.Piecewise(
        (x, sp.And(x > 0, x < 1)),
        (x**2, sp.Or(x < -1, x > 3)),
        (sp.sin(x), sp.Eq(x, 2)),
        (x / 2, sp.Ne(x, 0) & (x >= 1)),
        (-x, sp.Not(sp.And(x > -1, x <= 0))),
    )  # no True branch: (-1, 0] has no match and must give NaN
    q = sp.Min(sp.Max(yp, p0), 1 - p0)
    bce = -(yt * sp.log(q) + (1 - yt) * sp.log(1 - q))
    huber = sp.Piecewise((sp.Rational(1, 2) * (yp - yt)**2, sp.Abs(yp - yt) <= p0),
                         (p0 * (sp.Abs(yp - yt) - p0 / 2), True))
    zero = sp.Integer(0)
    return [
        make(ACTIVATION, sp.sin(x)),
        make(ACTIVATION, p0 * sp.tanh(p1 * x) + p2),
        make(ACTIVATION, sp.Max(0, x), sp.Heaviside(x, 0)),
        make(ACTIVATION, sp.Max(x, p0 * x), sp.Piecewise((1, x > 0), (p0, True))),
        make(ACTIVATION, pw),
        make(ACTIVATION, sp.Heaviside(x, 0), zero),
        make(ACTIVATION, p0 * sp.Heaviside(x - p1, p2), zero, 3),
        make(ACTIVATION, sp.Heaviside(x) + sp.sign(x), zero),
        make(ACTIVATION, sp.erf(x)),
        make(ACTIVATION, sp.erfc(p0 * x)),
        make(ACTIVATION, x**2),
        make(ACTIVATION, x**3 + x**4 - x**5),
        make(ACTIVATION, x**-1),
        make(ACTIVATION, x**-3 + p0 * x**-2),
        make(ACTIVATION, x**sp.Float(0.5)),
        make(ACTIVATION, x**sp.Float(-0.5)),
        make(ACTIVATION, x**sp.Rational(-1, 2) + x**sp.Rational(1, 3)),
        make(ACTIVATION, x**sp.Float(2.5)),
        make(ACTIVATION, x**p0),
        make(ACTIVATION, sp.exp(-x**2 / 2)),
        make(ACTIVATION, sp.log(1 + sp.exp(x))),
        make(ACTIVATION, 1 / (1 + sp.exp(-x))),
        make(ACTIVATION, (x + 1)**2 * sp.cos(x)),
        make(ACTIVATION, sp.asin(x) + sp.acos(x) / 3 + sp.atan(x)),
        make(ACTIVATION, sp.asinh(x) + sp.acosh(x) + sp.atanh(x)),
        make(ACTIVATION, sp.sinh(x) + sp.cosh(x) / 3 + sp.tan(x)),  # no cancellation
        make(ACTIVATION, sp.Abs(x), sp.sign(x)),
        make(ACTIVATION, sp.Min(x, p0, 1)),
        make(ACTIVATION, sp.GoldenRatio * x + sp.pi * sp.cos(sp.E * x)),
        make(ACTIVATION, sp.Float("0.1") * x + sp.Float("1e-3") + sp.log(x) + sp.exp(x)),
        make(ACTIVATION, sp.Piecewise((x, x > 0), (p0 * (sp.exp(x) - 1), True))),
        make(ACTIVATION, log1p(x**2) + p0 * expm1(-x)),
        make(ACTIVATION, p0 + p1),  # no variable at all
        make(LOSS, (yp - yt)**2),
        make(LOSS, sp.Abs(yp - yt), sp.sign(yp - yt)),
        make(LOSS, bce),
        make(LOSS, huber),
        make(LOSS, sp.log(sp.cosh(yp - yt))),
    ]


CORPUS: List[Structure] = _corpus()
#: Slot values used for every structure (row r of a layer uses PARAMS[r]).
PARAMS = np.array([0.3, 0.7, 1.5, -0.25])


# -- NumPy references -----------------------------------------------------
_HEAVISIDE = sp.Function("np_heaviside")


@functools.lru_cache(maxsize=None)
def reference(structure: Structure, which: str):
    """NumPy evaluator of ``expr`` (which="fwd") or ``derivative`` ("bwd").

    ``np.heaviside`` replaces lambdify's Piecewise rewrite of Heaviside, which
    gives 1 instead of NaN for a NaN input.
    """
    expr = structure.expr if which == "fwd" else structure.derivative
    expr = expr.replace(sp.Heaviside, lambda *a: _HEAVISIDE(*a))
    args = [*structure.variables, *structure.slots]
    return sp.lambdify(args, expr, [{"np_heaviside": np.heaviside}, "scipy", "numpy"])


def evaluate(structure: Structure, which: str, dtype: str, a: np.ndarray,
             b: np.ndarray | None = None, g: np.ndarray | None = None, *,
             arithmetic: str | None = None) -> np.ndarray:
    """NumPy result of a kernel of ``dtype``, computed in ``arithmetic``.

    The slot values are first rounded to ``dtype``, as the kernels do; with
    ``arithmetic="float32"`` every NumPy step rounds to float32 like C does.
    """
    arithmetic = arithmetic or dtype
    t = np.dtype(arithmetic).type
    consts = [t(np.dtype(dtype).type(v)) for v in PARAMS[: structure.n_slots]]
    ins = [a] if structure.mode == ACTIVATION else [a, b]
    ins = [np.asarray(v).astype(arithmetic) for v in ins]
    with np.errstate(all="ignore"):
        out = np.asarray(reference(structure, which)(*ins, *consts), dtype=arithmetic)
        out = np.broadcast_to(out, a.shape).astype(arithmetic)
        if which == "bwd" and structure.mode == ACTIVATION:
            out = (np.asarray(g).astype(arithmetic) * out).astype(arithmetic)
    return out


def special_values(dtype: str) -> np.ndarray:
    """Signed zeros, NaN, infinities, huge, tiny, denormal and branch points."""
    vals = [0.0, -0.0, np.nan, np.inf, -np.inf, 1, -1, 0.5, -0.5, 2, -2, 3, -3,
            0.999, 1.001, 10, -10, 30, -30, 89, -89, 100, -100, 710, -710, 1e5, -1e5,
            1e10, 1e30, -1e30, 1e300, -1e300, 1e-5, -1e-5, 5e-324, -5e-324, 1e-310,
            1e-40, -1e-40, 1e-45, 3.4e38, -3.4e38, 1.5e-38]
    with np.errstate(over="ignore"):
        return np.array(vals, dtype=np.float64).astype(dtype)


def activation_inputs(dtype: str, n_random: int = 400) -> np.ndarray:
    rng = np.random.default_rng(1234)
    rand = np.concatenate([rng.normal(0, 3, n_random // 2), rng.uniform(-1, 1, n_random // 2)])
    return np.concatenate([special_values(dtype), rand.astype(dtype)])


def loss_inputs(dtype: str) -> tuple[np.ndarray, np.ndarray]:
    sv = special_values(dtype)[:20]
    yp, yt = (m.ravel() for m in np.meshgrid(sv, sv))
    rng = np.random.default_rng(99)
    rp = rng.uniform(-0.5, 1.5, 300).astype(dtype)
    rt = rng.choice([0.0, 1.0, 0.3], 300).astype(dtype)
    return np.concatenate([yp, rp]), np.concatenate([yt, rt])


def grad_inputs(n: int, dtype: str) -> np.ndarray:
    g = np.random.default_rng(7).normal(0, 2, n).astype(dtype)
    g[:3] = [np.nan, np.inf, 0.0]
    return g


#: Tolerances. float64 kernels use libm/libmvec (<= 4 ulp) in NumPy's
#: operation order; an ulp-level difference followed by a cancellation
#: (1 - tanh(x)**2 near saturation) becomes ~1e-16 absolute, hence the atol.
#: float32 kernels are compared with NumPy float32 evaluation (every step
#: rounded to float32 in both; float32 math functions differ by a few ulp).
#: Where the two orders of rounding differ (x**4 is pow() in NumPy, x*x*x*x
#: here) and a cancellation follows (a polynomial near its root), a value
#: also passes when it is within 16 ulp of the *term magnitudes* (the
#: expression with every sum replaced by the sum of absolute values) of the
#: exact float64 result, plus 4x NumPy float32's own error.
TOLERANCE = {"float64": dict(rtol=1e-12, atol=1e-14), "float32": dict(rtol=4e-6, atol=2e-6)}


@functools.lru_cache(maxsize=None)
def _magnitude(structure: Structure, which: str) -> Structure:
    def absolute_sum(expr):
        return expr.replace(lambda n: n.is_Add, lambda n: sp.Add(*[sp.Abs(t) for t in n.args]))
    return dataclasses.replace(structure, expr=absolute_sum(structure.expr),
                               derivative=absolute_sum(structure.derivative))


def check(actual: np.ndarray, structure: Structure, which: str, dtype: str,
          a: np.ndarray, b: np.ndarray | None = None, g: np.ndarray | None = None,
          what: str = "") -> None:
    """``actual`` has the reference's NaNs and infinities, and close values."""
    what = f"{what or which} {structure.expr if which == 'fwd' else structure.derivative}"
    expected = evaluate(structure, which, dtype, a, b, g)
    nan_a, nan_e = np.isnan(actual), np.isnan(expected)
    bad = np.flatnonzero(nan_a != nan_e)
    assert bad.size == 0, (f"{what}: NaN mismatch at {bad[:8]} (inputs {a[bad[:8]]}): "
                           f"got {actual[bad[:8]]}, want {expected[bad[:8]]}")
    ok = np.isclose(actual, expected, equal_nan=True, **TOLERANCE[dtype])
    if not ok.all():
        exact = evaluate(structure, which, dtype, a, b, g, arithmetic="float64")
        scale = np.abs(evaluate(_magnitude(structure, which), which, dtype, a, b,
                                None if g is None else np.abs(g), arithmetic="float64"))
        eps = np.finfo(dtype).eps
        with np.errstate(invalid="ignore"):
            numpy_error = np.abs(expected.astype(np.float64) - exact)
            bound = 4 * numpy_error + 16 * eps * scale
            ok |= np.abs(actual.astype(np.float64) - exact) <= bound
    bad = np.flatnonzero(~ok)
    assert bad.size == 0, (f"{what}: {bad.size} values differ, e.g. at {bad[:8]} "
                           f"(inputs {a[bad[:8]]}): got {actual[bad[:8]]}, "
                           f"want {expected[bad[:8]]}")


# -- compilers -------------------------------------------------------------
def have_gcc() -> bool:
    return shutil.which("gcc") is not None


@functools.lru_cache(maxsize=None)
def libmvec_available() -> bool:
    """glibc x86-64 Linux with AVX2/FMA and a linkable libmvec."""
    if not (sys.platform.startswith("linux") and platform.machine() == "x86_64"):
        return False
    if platform.libc_ver()[0] != "glibc" or not have_gcc():
        return False
    try:
        cpu = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = set(next((l for l in cpu.splitlines() if l.startswith("flags")), "").split())
    if not {"avx2", "fma", "bmi2", "f16c", "movbe"} <= flags:
        return False
    probe = subprocess.run(["gcc", "-print-file-name=libmvec.so"], capture_output=True, text=True)
    return os.path.isabs(probe.stdout.strip())


def production_flags(openmp: str = "openmp") -> Tuple[List[str], List[str]]:
    """(compile, link) flags of the CPU backend with GCC on this host, from the same functions.

    ``openmp`` is ``"openmp"``, ``"simd"`` (a compiler without the OpenMP runtime:
    ``-fopenmp-simd``) or ``"none"``; libmvec is linked where it is available.
    """
    isa_args = isa_candidates("gcc", host_level())[0][1]
    omp = flags.OPENMP if openmp == "openmp" else ()
    compile_args = flags.unix_compile_args(isa_args, omp, simd=openmp == "simd")
    link_args = flags.unix_link_args(omp, libmvec=libmvec_available())
    return list(flags.build_compile_args(compile_args, link_args)), list(link_args)


def fast_flags() -> dict:
    """The vectorised build, exactly as the cached backend builds it (cffi options)."""
    compile_args, link_args = production_flags()
    return dict(extra_compile_args=compile_args, extra_link_args=link_args)


_BUILD_SCRIPT = textwrap.dedent("""
    import json, sys, cffi
    spec = json.load(open(sys.argv[1]))
    ffi = cffi.FFI()
    ffi.cdef(spec["cdef"])
    ffi.set_source(spec["name"], spec["source"], **spec["options"])
    print(ffi.compile(tmpdir=spec["tmpdir"], verbose=False))
""")


def build_cffi(workdir: Path, name: str, cdef: str, source: str, **options):
    """Compile with cffi in a child process (cffi changes the cwd) and load it."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec = workdir / f"{name}.json"
    spec.write_text(json.dumps(dict(name=name, cdef=cdef, source=source, options=options,
                                    tmpdir=str(workdir))))
    proc = subprocess.run([sys.executable, "-c", _BUILD_SCRIPT, str(spec)], cwd=workdir,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"cffi build of {name} failed:\n{proc.stdout}\n{proc.stderr}"
    path = proc.stdout.strip().splitlines()[-1]
    mod_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    module.path = path
    return module


class Built:
    """A kernel module and the runtime module for one dtype, loaded."""

    def __init__(self, dtype: str, kernels, runtime, cmodule, rsource) -> None:
        self.dtype, self.kernels, self.runtime = dtype, kernels, runtime
        self.cmodule, self.rsource = cmodule, rsource

    def address(self, name: str) -> int:
        """Address of a row function, read from the module's export tables as CPU_JIT does."""
        return exported_functions(self.kernels)[name]

    def function(self, name: str, params: str) -> Any:
        """A row function as a callable cffi function pointer (``params``: its cdef parameters)."""
        ctype = "float" if self.dtype == "float32" else "double"
        return self.kernels.ffi.cast(f"void(*)({params.format(T=ctype)})", self.address(name))

    def row(self, structure: Structure, which: str, a, b=None, g=None) -> np.ndarray:
        ffi = self.kernels.ffi
        name = self.cmodule.functions[structure.key][0 if which == "fwd" else 1]
        ctype = "float *" if self.dtype == "float32" else "double *"
        out = np.full_like(a, 12345.0)
        params = np.ascontiguousarray(PARAMS, dtype=np.float64)

        def ptr(arr):
            return ffi.NULL if arr is None else ffi.cast(ctype, ffi.from_buffer(arr))
        self.function(name, CDEF_PARAMS)(a.size, ptr(a), ptr(b), ptr(g), ptr(out),
                           ffi.cast("double *", ffi.from_buffer(params)))
        return out

    def cgrad(self, structure: Structure, a, b=None, g=None) -> Tuple[np.ndarray, np.ndarray]:
        """(out, partial sums) of the structure's constants-gradient row function on ``a``:
        one sum per span of the runtime's SPAN_ELEMENTS and slot, shape (spans, n_slots)."""
        ffi = self.kernels.ffi
        ctype = "float *" if self.dtype == "float32" else "double *"
        out = np.full_like(a, 12345.0)
        spans = -(-a.size // SPAN_ELEMENTS)
        sums = np.full((spans, structure.n_slots), 12345.0)
        params = np.ascontiguousarray(PARAMS, dtype=np.float64)

        def ptr(arr, kind=ctype):
            return ffi.NULL if arr is None else ffi.cast(kind, ffi.from_buffer(arr))
        self.function(self.cmodule.constants_grad[structure.key], CGRAD_CDEF_PARAMS)(
            a.size, ptr(a), ptr(b), ptr(g), ptr(out), ptr(params, "double *"), ptr(sums, "double *"))
        return out, sums

    def run(self, structures: Sequence[Structure], which: str, a, b=None, g=None,
            nthreads: int = 0, null_params: bool = False) -> np.ndarray:
        """Run a (rows, cols) layer through hs_run_*, row r with structures[r]."""
        rffi, rlib = self.runtime.ffi, self.runtime.lib
        rows, cols = a.shape
        fns = rffi.new(f"{self.rsource.row_fn_type}[]", rows)
        for r, structure in enumerate(structures):
            name = self.cmodule.functions[structure.key][0 if which == "fwd" else 1]
            fns[r] = rffi.cast(self.rsource.row_fn_type, self.address(name))
        params = np.ascontiguousarray(np.tile(PARAMS, (rows, 1)), dtype=np.float64)
        out = np.full_like(a, 12345.0)
        ctype = "float *" if self.dtype == "float32" else "double *"

        def ptr(arr):
            return rffi.NULL if arr is None else rffi.cast(ctype, rffi.from_buffer(arr))
        getattr(rlib, self.rsource.run_name)(
            fns, rows, cols, ptr(a), ptr(b), ptr(g), ptr(out),
            rffi.NULL if null_params else rffi.cast("double *", rffi.from_buffer(params)),
            0 if null_params else params.shape[1], nthreads)
        return out
