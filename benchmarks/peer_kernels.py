"""The contenders of ``cpu_peers.py``: a hand-written C reference and optional peers.

Every contender computes the same 8 activations (see ``cpu_peers.CONFIGS``),
row r using activation ``kinds[r]``; backward is ``g * f'(z)``.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, Dict

import numpy as np

from c_kernels_probe import build

_REFERENCE = r"""
#include <math.h>
#include <stdint.h>
#include <omp.h>
__attribute__((simd("notinbranch"))) T TANH(T);
__attribute__((simd("notinbranch"))) T SIN(T);
__attribute__((simd("notinbranch"))) T COS(T);
__attribute__((simd("notinbranch"))) T EXP(T);
__attribute__((simd("notinbranch"))) T LOG(T);
__attribute__((simd("notinbranch"))) T LOG1P(T);
/* The stable forms a careful hand-writer uses (one exp, never of a positive argument), so the
   reference computes the same function as the library's named sigmoid and softplus. */
#define SIGMOID(x) ((x) >= 0 ? 1 / (1 + EXP(-FABS(x))) : EXP(-FABS(x)) / (1 + EXP(-FABS(x))))

static void fwd_row(int kind, int64_t n, const T *restrict a, T *restrict o)
{
    int64_t i;
    switch (kind) {
    case 0: for (i = 0; i < n; ++i) o[i] = TANH(a[i]); break;
    case 1: for (i = 0; i < n; ++i) o[i] = SIN(a[i]); break;
    case 2: for (i = 0; i < n; ++i) o[i] = a[i] > 0 ? a[i] : 0; break;
    case 3: for (i = 0; i < n; ++i) o[i] = SIGMOID(a[i]); break;
    case 4: for (i = 0; i < n; ++i) o[i] = (a[i] > 0 ? a[i] : 0) + LOG1P(EXP(-FABS(a[i]))); break;
    case 5: for (i = 0; i < n; ++i) o[i] = EXP(-a[i] * a[i]); break;
    case 6: for (i = 0; i < n; ++i) o[i] = (T)1.5 * TANH((T)0.7 * a[i]); break;
    default: for (i = 0; i < n; ++i) o[i] = a[i] > 0 ? a[i] : (T)0.01 * a[i]; break;
    }
}

static void bwd_row(int kind, int64_t n, const T *restrict a, const T *restrict g, T *restrict o)
{
    int64_t i;
    switch (kind) {
    case 0: for (i = 0; i < n; ++i) { T t = TANH(a[i]); o[i] = g[i] * (1 - t * t); } break;
    case 1: for (i = 0; i < n; ++i) o[i] = g[i] * COS(a[i]); break;
    case 2: for (i = 0; i < n; ++i) o[i] = a[i] > 0 ? g[i] : 0; break;
    case 3: for (i = 0; i < n; ++i) { T s = SIGMOID(a[i]); o[i] = g[i] * s * (1 - s); } break;
    case 4: for (i = 0; i < n; ++i) o[i] = g[i] * SIGMOID(a[i]); break;
    case 5: for (i = 0; i < n; ++i) o[i] = g[i] * -2 * a[i] * EXP(-a[i] * a[i]); break;
    case 6: for (i = 0; i < n; ++i) { T t = TANH((T)0.7 * a[i]); o[i] = g[i] * (T)1.05 * (1 - t * t); } break;
    default: for (i = 0; i < n; ++i) o[i] = g[i] * (a[i] > 0 ? (T)1 : (T)0.01); break;
    }
}

void ref_run(int backward, int64_t rows, int64_t cols, const T *a, const T *g, T *out,
             const int *kinds)
{
    int64_t r;
#pragma omp parallel for schedule(static) if (rows * cols >= 32768)
    for (r = 0; r < rows; ++r) {
        const int64_t off = r * cols;
        if (backward) bwd_row(kinds[r], cols, a + off, g + off, out + off);
        else fwd_row(kinds[r], cols, a + off, out + off);
    }
}
"""
_NAMES = {"float32": ("float", "f"), "float64": ("double", "")}
_built: Dict[str, object] = {}
_workdir = Path(tempfile.mkdtemp(prefix="heterosymnn-bench-"))


def reference_kernel(dtype: str, kinds: np.ndarray) -> Callable:
    """Hand-written C for the 8 activations: ``call(backward, z, g, out)``."""
    ctype, suffix = _NAMES[dtype]
    if dtype not in _built:
        source = _REFERENCE.replace("TANH", "tanh" + suffix).replace("SIN", "sin" + suffix) \
            .replace("COS", "cos" + suffix).replace("EXP", "exp" + suffix).replace("LOG1P", "log1p" + suffix).replace("LOG", "log" + suffix).replace("FABS", "fabs" + suffix)
        source = f"#define T {ctype}\n" + source
        cdef = (f"void ref_run(int backward, int64_t rows, int64_t cols, const {ctype} *a, "
                f"const {ctype} *g, {ctype} *out, const int *kinds);")
        _built[dtype] = build(_workdir, f"_reference_{dtype}", cdef, source)
    module = _built[dtype]
    ffi, lib = module.ffi, module.lib
    kinds = np.ascontiguousarray(kinds, dtype=np.int32)
    kinds_pointer = ffi.from_buffer("int[]", kinds)
    pointer = f"{ctype} *"

    def call(backward: bool, z: np.ndarray, g: np.ndarray, out: np.ndarray) -> None:
        lib.ref_run(int(backward), z.shape[0], z.shape[1], ffi.from_buffer(pointer, z),
                    ffi.from_buffer(pointer, g), ffi.from_buffer(pointer, out), kinds_pointer)

    call.keep = kinds  # the pointer above must outlive the call
    return call


def _groups(kinds: np.ndarray):
    return [np.flatnonzero(kinds == k) for k in range(8)]


def torch_peers(kinds: np.ndarray, device: str = "cpu") -> Dict[str, Callable]:
    """PyTorch eager and ``torch.compile``, one evaluation per group of rows, on ``device``.

    Shared by the CPU and GPU benchmarks; inputs may be NumPy or CuPy arrays
    (``torch.as_tensor`` takes either without a copy on the matching device).
    """
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        return {}
    groups = [torch.as_tensor(g, device=device) for g in _groups(kinds)]
    functions = [torch.tanh, torch.sin, torch.relu, torch.sigmoid, torch.nn.functional.softplus,
                 lambda x: torch.exp(-x * x), lambda x: 1.5 * torch.tanh(0.7 * x),
                 lambda x: torch.nn.functional.leaky_relu(x, 0.01)]

    def forward(z):
        out = torch.empty_like(z)
        for rows, f in zip(groups, functions):
            out[rows] = f(z[rows])
        return out

    def make(compiled: bool):
        run = torch.compile(forward) if compiled else forward

        def factory(direction, z, g):
            zt, gt = torch.as_tensor(z, device=device), torch.as_tensor(g, device=device)
            if direction == "fwd":
                return lambda: run(zt)

            def backward():
                x = zt.detach().requires_grad_(True)
                run(x).backward(gt)
                return x.grad
            return backward
        return factory

    return {"PyTorch eager": make(False), "torch.compile": make(True)}


def _jax_peers(dtype: str, kinds: np.ndarray) -> Dict[str, Callable]:
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", dtype == "float64")
    groups = _groups(kinds)
    functions = [jnp.tanh, jnp.sin, jax.nn.relu, jax.nn.sigmoid, jax.nn.softplus,
                 lambda x: jnp.exp(-x * x), lambda x: 1.5 * jnp.tanh(0.7 * x),
                 lambda x: jax.nn.leaky_relu(x, 0.01)]

    def forward(z):
        out = jnp.empty_like(z)
        for rows, f in zip(groups, functions):
            out = out.at[rows].set(f(z[rows]))
        return out

    fwd = jax.jit(forward)
    bwd = jax.jit(lambda z, g: jax.vjp(forward, z)[1](g)[0])

    def factory(direction, z, g):
        zj, gj = jnp.asarray(z), jnp.asarray(g)
        if direction == "fwd":
            return lambda: fwd(zj).block_until_ready()
        return lambda: bwd(zj, gj).block_until_ready()

    return {"JAX jit": factory}


_NUMBA_KERNELS: Dict[str, Callable] = {}


def _numba_kernel() -> Callable:
    """The loop a numba user writes: rows in parallel (``prange``), one branch per activation
    hoisted out of the element loop, ``fastmath`` off (NaN and inf semantics kept)."""
    if "run" in _NUMBA_KERNELS:
        return _NUMBA_KERNELS["run"]
    import numba

    @numba.njit(parallel=True, fastmath=False)
    def run(backward, kinds, z, g, out):  # pragma: no cover - compiled by numba
        for r in numba.prange(z.shape[0]):
            a, gr, o, k = z[r], g[r], out[r], kinds[r]
            if k == 0:
                for i in range(a.shape[0]):
                    t = np.tanh(a[i])
                    o[i] = gr[i] * (1 - t * t) if backward else t
            elif k == 1:
                for i in range(a.shape[0]):
                    o[i] = gr[i] * np.cos(a[i]) if backward else np.sin(a[i])
            elif k == 2:
                for i in range(a.shape[0]):
                    if backward:
                        o[i] = gr[i] if a[i] > 0 else 0
                    else:
                        o[i] = a[i] if a[i] > 0 else 0
            elif k == 3:
                for i in range(a.shape[0]):
                    e = np.exp(-np.abs(a[i]))
                    s = 1 / (1 + e) if a[i] >= 0 else e / (1 + e)
                    o[i] = gr[i] * s * (1 - s) if backward else s
            elif k == 4:
                for i in range(a.shape[0]):
                    e = np.exp(-np.abs(a[i]))
                    if backward:
                        o[i] = gr[i] * (1 / (1 + e) if a[i] >= 0 else e / (1 + e))
                    else:
                        o[i] = (a[i] if a[i] > 0 else 0) + np.log1p(e)
            elif k == 5:
                for i in range(a.shape[0]):
                    e = np.exp(-a[i] * a[i])
                    o[i] = gr[i] * -2 * a[i] * e if backward else e
            elif k == 6:
                for i in range(a.shape[0]):
                    t = np.tanh(0.7 * a[i])
                    o[i] = gr[i] * 1.05 * (1 - t * t) if backward else 1.5 * t
            else:
                for i in range(a.shape[0]):
                    if backward:
                        o[i] = gr[i] * (1.0 if a[i] > 0 else 0.01)
                    else:
                        o[i] = a[i] if a[i] > 0 else 0.01 * a[i]

    _NUMBA_KERNELS["run"] = run
    return run


def _numba_peers(dtype: str, kinds: np.ndarray) -> Dict[str, Callable]:
    run = _numba_kernel()
    kinds = np.ascontiguousarray(kinds, dtype=np.int64)

    def factory(direction, z, g):
        out = np.empty_like(z)
        backward = direction == "bwd"
        run(backward, kinds, z, g, out)  # compile for these types before timing

        def call():
            run(backward, kinds, z, g, out)
            return out
        return call

    return {"numba": factory}


def optional_peers(dtype: str, kinds: np.ndarray) -> Dict[str, Callable]:
    """``{name: factory(direction, z, g) -> call}`` for every peer that is installed.

    Each call returns its result, so that the benchmark checks it against the reference before
    timing. Install them with ``pip install torch==2.13.0 jax numba``; none is a dependency.
    """
    peers: Dict[str, Callable] = {}
    for make in (lambda: torch_peers(kinds), lambda: _jax_peers(dtype, kinds),
                 lambda: _numba_peers(dtype, kinds)):
        try:
            peers.update(make())
        except ImportError:
            continue
    return peers
