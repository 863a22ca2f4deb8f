"""Run generated CUDA kernels on the CPU: the source built as host C++ with g++.

A few macros stand in for the CUDA keywords, ``__longlong_as_double`` is a memcpy, and each
kernel gets a driver that loops over every block and thread of a grid in turn. The kernels
use grid-stride loops and no shared memory or synchronisation, so running the threads one
after another gives exactly what a GPU computes, up to the accuracy of the math functions.
Used by the codegen tests (semantics, indexing) and by the backend tests (a simulated CuPy).
"""
from __future__ import annotations

import ctypes
import hashlib
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

SHIM = """\
#include <math.h>
#include <string.h>
#define __device__
#define __global__
#define __forceinline__ inline
struct hs_dim3 { unsigned int x, y, z; };
static hs_dim3 blockIdx, threadIdx, blockDim, gridDim;
static inline double __longlong_as_double(long long v) { double d; memcpy(&d, &v, sizeof d); return d; }
"""

_DRIVER = """
extern "C" void emu_{name}(unsigned gx, unsigned gy, unsigned bx, {params})
{{
    gridDim.x = gx; gridDim.y = gy; gridDim.z = 1;
    blockDim.x = bx; blockDim.y = 1; blockDim.z = 1;
    for (unsigned y = 0; y < gy; ++y)
        for (unsigned x = 0; x < gx; ++x)
            for (unsigned t = 0; t < bx; ++t) {{
                blockIdx.x = x; blockIdx.y = y; blockIdx.z = 0;
                threadIdx.x = t; threadIdx.y = 0; threadIdx.z = 0;
                {name}(ids, params, p_stride, rows, cols, a, b, g, out);
            }}
}}
"""


def have_gxx() -> bool:
    return shutil.which("g++") is not None


def build(source: str, kernels: Iterable[str], dtype: str, workdir: Path) -> ctypes.CDLL:
    """Compile ``source`` plus a driver ``emu_<kernel>`` per kernel name and load it."""
    ctype = "float" if dtype == "float32" else "double"
    params = (f"const int *ids, const double *params, long long p_stride, long long rows, long long cols, "
              f"const {ctype} *a, const {ctype} *b, const {ctype} *g, {ctype} *out")
    text = SHIM + source + "".join(_DRIVER.format(name=n, params=params) for n in kernels)
    tag = hashlib.sha256(text.encode()).hexdigest()[:16]
    workdir.mkdir(parents=True, exist_ok=True)
    cpp, library = workdir / f"emu_{tag}.cpp", workdir / f"emu_{tag}.so"
    if not library.exists():
        cpp.write_text(text)
        proc = subprocess.run(["g++", "-O1", "-shared", "-fPIC", "-ffp-contract=off", "-Wall", "-Werror",
                               "-Wno-unused-function", str(cpp), "-o", str(library)],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
    return ctypes.CDLL(str(library))


def launch(lib: ctypes.CDLL, kernel: str, grid: Sequence[int], block: Sequence[int],
           args: Sequence[Any]) -> None:
    """Run ``kernel`` over ``grid`` x ``block`` with the kernels' 9 arguments.

    Arrays are anything with ``ctypes.data`` (NumPy and subclasses), ``None`` a NULL pointer,
    the three integers ``long long``.
    """
    ids, params, p_stride, rows, cols, a, b, g, out = args

    def ptr(array):
        return None if array is None else ctypes.c_void_p(array.ctypes.data)

    getattr(lib, f"emu_{kernel}")(
        ctypes.c_uint(grid[0]), ctypes.c_uint(grid[1]), ctypes.c_uint(block[0]), ptr(ids), ptr(params),
        ctypes.c_longlong(int(p_stride)), ctypes.c_longlong(int(rows)), ctypes.c_longlong(int(cols)),
        ptr(a), ptr(b), ptr(g), ptr(out))
