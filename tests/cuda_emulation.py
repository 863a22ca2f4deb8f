"""Run generated CUDA kernels on the CPU: the source built as host C++ with g++.

A few macros stand in for the CUDA keywords, ``__longlong_as_double`` is a memcpy, and each
kernel gets a driver ``emu_<kernel>(gx, gy, bx, <the kernel's own parameters>)`` that runs
every block of the grid in turn and, within a block, every warp in turn. The 32 lanes of a
warp are fibers (``ucontext``) on one host thread, switched in a fixed order: a lane runs
until it reaches a ``__shfl_down_sync`` or returns, so the shuffles exchange values in lock
step exactly as on a GPU, and a lane that leaves the kernel while others wait at a shuffle
(undefined behaviour on a GPU) makes the launch fail. Kernels without shuffles simply run
lane after lane. The kernels use grid-stride loops and no shared memory or block-wide
barriers, so this gives exactly what a GPU computes, up to the accuracy of the math
functions. Used by the codegen tests (semantics, indexing, the tile kernels' reductions) and
by the backend tests through :class:`SimulatedCupy`.
"""
from __future__ import annotations

import ctypes
import hashlib
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path
from typing import Any, Dict, Iterable, List, Sequence, Tuple

import numpy as np

SHIM = """\
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>
#define __device__
#define __global__
#define __forceinline__ inline
struct hs_dim3 { unsigned int x, y, z; };
static hs_dim3 blockIdx, threadIdx, blockDim, gridDim;
static inline double __longlong_as_double(long long v) { double d; memcpy(&d, &v, sizeof d); return d; }

/* One warp = 32 fibers; a shuffle is a barrier of the warp's lanes. */
enum { HS_READY, HS_WAITING, HS_DONE };
static const size_t HS_STACK = 256 * 1024;
static ucontext_t hs_main, hs_ctx[32];
static int hs_state[32];
static unsigned hs_lane, hs_lanes;
static double hs_slot[32];
static char *hs_stacks;
static void (*hs_entry)(void);

static void hs_trampoline(void) { hs_entry(); hs_state[hs_lane] = HS_DONE; }

static void hs_barrier(void)
{
    hs_state[hs_lane] = HS_WAITING;
    swapcontext(&hs_ctx[hs_lane], &hs_main);
}

static inline double __shfl_down_sync(unsigned mask, double v, unsigned delta)
{
    (void)mask;
    const unsigned lane = hs_lane;
    hs_slot[lane] = v;
    hs_barrier();  /* every lane has published its value */
    const double r = lane + delta < hs_lanes ? hs_slot[lane + delta] : v;
    hs_barrier();  /* every lane has read before any publishes again */
    return r;
}

static inline float __shfl_down_sync(unsigned mask, float v, unsigned delta)
{
    return (float)__shfl_down_sync(mask, (double)v, delta);
}

static int hs_run(unsigned gx, unsigned gy, unsigned bx, void (*entry)(void))
{
    if (!hs_stacks && !(hs_stacks = (char *)malloc(32 * HS_STACK)))
        return -2;
    hs_entry = entry;
    gridDim = hs_dim3{gx, gy, 1};
    blockDim = hs_dim3{bx, 1, 1};
    for (unsigned y = 0; y < gy; ++y)
        for (unsigned x = 0; x < gx; ++x)
            for (unsigned warp = 0; warp * 32 < bx; ++warp) {
                hs_lanes = bx - warp * 32 < 32 ? bx - warp * 32 : 32;
                for (unsigned l = 0; l < hs_lanes; ++l) {
                    getcontext(&hs_ctx[l]);
                    hs_ctx[l].uc_stack.ss_sp = hs_stacks + l * HS_STACK;
                    hs_ctx[l].uc_stack.ss_size = HS_STACK;
                    hs_ctx[l].uc_link = &hs_main;
                    makecontext(&hs_ctx[l], hs_trampoline, 0);
                    hs_state[l] = HS_READY;
                }
                for (;;) {  /* rounds: every live lane runs to its next shuffle or its end */
                    unsigned done = 0, waiting = 0;
                    for (unsigned l = 0; l < hs_lanes; ++l) {
                        if (hs_state[l] == HS_DONE) { ++done; continue; }
                        hs_lane = l;
                        blockIdx = hs_dim3{x, y, 0};
                        threadIdx = hs_dim3{warp * 32 + l, 0, 0};
                        swapcontext(&hs_main, &hs_ctx[l]);
                        if (hs_state[l] == HS_DONE) ++done; else ++waiting;
                    }
                    if (!waiting)
                        break;
                    if (done)
                        return -1;  /* a lane left while others wait at a shuffle */
                }
            }
    return 0;
}
"""

_DRIVER = """
static struct {{ {fields} }} emu_args_{name};
static void emu_entry_{name}(void) {{ {name}({names}); }}
extern "C" int emu_{name}(unsigned gx, unsigned gy, unsigned bx, {params})
{{
    {stores}
    return hs_run(gx, gy, bx, emu_entry_{name});
}}
"""

_SIGNATURE = re.compile(r'extern "C" __global__ void (\w+)\(([^)]*)\)')
_SCALARS = {"long long": ctypes.c_longlong, "int": ctypes.c_int, "unsigned": ctypes.c_uint,
            "double": ctypes.c_double, "float": ctypes.c_float}


def have_gxx() -> bool:
    return shutil.which("g++") is not None


def kernel_parameters(source: str) -> Dict[str, List[Tuple[str, str]]]:
    """Kernel name -> its parameters as ``(C type, name)``, read from the source."""
    kernels = {}
    for name, params in _SIGNATURE.findall(source):
        parsed = []
        for param in " ".join(params.split()).split(","):
            match = re.fullmatch(r"(.*?[\s*])(\w+)", param.strip())
            parsed.append((match.group(1).strip(), match.group(2)))
        kernels[name] = parsed
    return kernels


def _ctype(ctype: str) -> Any:
    return ctypes.c_void_p if "*" in ctype else _SCALARS[ctype.replace("const ", "")]


def build(source: str, kernels: Iterable[str], dtype: str, workdir: Path) -> ctypes.CDLL:
    """Compile ``source`` plus a driver ``emu_<kernel>`` per kernel name and load it.

    ``dtype`` is unused (the drivers take each kernel's own parameters); kept for callers.
    """
    signatures = kernel_parameters(source)
    drivers = []
    for name in kernels:
        params = signatures[name]
        drivers.append(_DRIVER.format(
            name=name, fields=" ".join(f"{t} {n};" for t, n in params), names=", ".join(
                f"emu_args_{name}.{n}" for _, n in params),
            params=", ".join(f"{t} {n}" for t, n in params),
            stores=" ".join(f"emu_args_{name}.{n} = {n};" for _, n in params)))
    text = SHIM + source + "".join(drivers)
    tag = hashlib.sha256(text.encode()).hexdigest()[:16]
    workdir.mkdir(parents=True, exist_ok=True)
    cpp, library = workdir / f"emu_{tag}.cpp", workdir / f"emu_{tag}.so"
    if not library.exists():
        cpp.write_text(text)
        proc = subprocess.run(["g++", "-O1", "-shared", "-fPIC", "-ffp-contract=off", "-Wall", "-Werror",
                               "-Wno-unused-function", str(cpp), "-o", str(library)],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
    lib = ctypes.CDLL(str(library))
    for name in kernels:
        function = getattr(lib, f"emu_{name}")
        function.argtypes = [ctypes.c_uint] * 3 + [_ctype(t) for t, _ in signatures[name]]
        function.restype = ctypes.c_int
    return lib


def launch(lib: ctypes.CDLL, kernel: str, grid: Sequence[int], block: Sequence[int],
           args: Sequence[Any]) -> None:
    """Run ``kernel`` over ``grid`` x ``block`` with its arguments in order.

    Arrays are NumPy arrays (and subclasses), ``None`` a NULL pointer, numbers as they
    are (converted to the parameter's C type).
    """
    function = getattr(lib, f"emu_{kernel}")
    values = []
    for kind, arg in zip(function.argtypes[3:], args, strict=True):
        if kind is ctypes.c_void_p:
            assert arg is None or isinstance(arg, np.ndarray), f"{kernel}: a pointer argument got {arg!r}"
            values.append(None if arg is None else arg.ctypes.data)
        else:
            values.append(float(arg) if kind in (ctypes.c_double, ctypes.c_float) else int(arg))
    grid = tuple(grid) + (1, 1)
    status = function(grid[0], grid[1], block[0], *values)
    assert status == 0, f"{kernel}: a lane returned while the others of its warp waited at a shuffle"


def build_modules(structures: Sequence[Any], workdir: Path) -> Dict[str, Tuple[Any, ctypes.CDLL]]:
    """``structures``' fused CUDA module per dtype, built for the host: dtype -> (CudaModule, library).

    Skips the calling test where there is no g++.
    """
    import pytest

    from heterosymnn.codegen.cuda_source import render_cuda_module

    if not have_gxx():
        pytest.skip("no g++ to build the host emulation of the CUDA kernels")
    built = {}
    for dtype in ("float32", "float64"):
        module = render_cuda_module(structures, dtype)
        built[dtype] = (module, build(module.source, module.kernels.values(), dtype, workdir))
    return built

# -- a simulated CuPy whose kernels run through this emulation ---------------------------------
class SimulatedCupy:
    """Enough of CuPy for the backend and the compiler, with ``n_devices`` simulated devices.

    Records every ``get_function`` in ``loads`` as ``(device, kernel)``, every module
    loaded in ``modules`` as ``(device, path)``, every launch in ``launched`` as ``(kernel,
    grid, block, args)`` and every ``empty`` in ``allocated`` as ``(shape, dtype)``.
    ``sm_count`` is what each device reports, ``archs`` their compute capabilities
    (``"80"`` each by default).

    ``RawModule`` only loads files (``path=``), as the backend does: a real cubin (or PTX)
    from the kernel cache, whose ELF header must name the device's architecture. The
    emulation cannot run SASS, so it builds the source kept beside the cubin in its
    cache entry (``kernels.cu``) for the host instead.
    """

    def __init__(self, n_devices: int, workdir: Path, sm_count: int = 2, archs: Sequence[str] = ()):
        self.current = 0
        self.sm_count = sm_count
        self.archs = list(archs) or ["80"] * n_devices
        self.loads: List[Tuple[int, str]] = []
        self.modules: List[Tuple[int, str]] = []
        self.launched: List[Tuple[str, tuple, tuple, tuple]] = []
        self.allocated: List[Tuple[tuple, np.dtype]] = []
        sim = self

        class ndarray(np.ndarray):
            def __array_finalize__(self, obj):
                self.device_id = getattr(obj, "device_id", sim.current)

            @property
            def data(self):
                return types.SimpleNamespace(device_id=self.device_id)

            def set(self, host):
                assert sim.current == self.device_id, "a copy to another device than the current one"
                self[...] = host

        class Device:
            def __init__(self, device_id):
                self.id, self._saved = device_id, []
                self.compute_capability = sim.archs[device_id]

            def __enter__(self):
                self._saved.append(sim.current)
                sim.current = self.id
                return self

            def __exit__(self, *exc):
                sim.current = self._saved.pop()
                return False

        class Runtime:
            getDeviceCount = staticmethod(lambda: n_devices)
            getDevice = staticmethod(lambda: sim.current)
            getDeviceProperties = staticmethod(lambda device: {"multiProcessorCount": sim.sm_count})
            driverGetVersion = staticmethod(lambda: 12080)
            runtimeGetVersion = staticmethod(lambda: 12080)

        class RawModule:
            def __init__(self, code=None, *, path=None, options=()):
                assert code is None and path is not None, "the backend must load a built file, not compile"
                from heterosymnn.toolchains.cuda_compiler import elf_architecture

                data = Path(path).read_bytes()
                expected = f"sm_{sim.archs[sim.current]}"
                if data[:4] == b"\x7fELF":
                    assert elf_architecture(data) == expected, f"{path} is not a cubin for {expected}"
                else:
                    assert b".target" in data, f"{path} is neither a cubin nor PTX"
                sim.modules.append((sim.current, str(path)))
                self.code = (Path(path).parent / "kernels.cu").read_text()
                self.names = re.findall(r'extern "C" __global__ void (\w+)\(', self.code)
                self.dtype = "float32" if self.names[0].endswith("f32") else "float64"

            def get_function(self, name):
                sim.loads.append((sim.current, name))
                lib = build(self.code, self.names, self.dtype, workdir)
                device = sim.current

                def function(grid, block, args):
                    assert sim.current == device, "launched on another device than the module's"
                    for arg in args:
                        if isinstance(arg, ndarray):
                            assert arg.device_id == device, "an argument lives on another device"
                    sim.launched.append((name, tuple(grid), tuple(block), tuple(args)))
                    launch(lib, name, grid, block, args)
                return function

        self.module = cupy = types.ModuleType("cupy")
        cupy.ndarray = ndarray
        cupy.cuda = types.SimpleNamespace(runtime=Runtime(), Device=Device)
        cupy.RawModule = RawModule
        cupy.may_share_memory = np.may_share_memory

        def empty(shape, dtype=np.float64):
            sim.allocated.append((tuple(np.atleast_1d(shape)), np.dtype(dtype)))
            return np.ndarray.__new__(ndarray, shape, dtype)

        def asarray(x, dtype=None):
            if isinstance(x, ndarray) and x.device_id == sim.current and dtype is None:
                return x
            x = np.asarray(x, dtype=dtype)
            result = np.ndarray.__new__(ndarray, x.shape, x.dtype)
            result[...] = x
            return result

        def ascontiguousarray(x):
            if x.flags.c_contiguous:
                return x
            with Device(x.device_id):
                return asarray(np.ascontiguousarray(np.asarray(x)))

        cupy.empty, cupy.asarray, cupy.ascontiguousarray = empty, asarray, ascontiguousarray
        cupy.asnumpy = lambda x: np.array(np.asarray(x))


def simulated_cupy(monkeypatch: Any, tmp_path: Path, n_devices: int = 2,
                   archs: Sequence[str] = ()) -> SimulatedCupy:
    """A :class:`SimulatedCupy` installed as ``cupy`` for one test (skips without g++ or
    without a CUDA compiler to build the cubins the backend loads)."""
    import pytest

    from heterosymnn.toolchains.cuda_compiler import detect_cuda_compilers

    if not have_gxx():
        pytest.skip("no g++ to build the host emulation of the CUDA kernels")
    if not any(status.usable for status in detect_cuda_compilers()):
        pytest.skip("no CUDA compiler (NVRTC or nvcc) to build the cubins the backend loads")
    simulated = SimulatedCupy(n_devices, tmp_path / "emulation", archs=archs)
    monkeypatch.setitem(sys.modules, "cupy", simulated.module)
    return simulated
