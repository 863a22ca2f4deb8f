"""GPU_CUDA: one fused CUDA source per layer, compiled to a cubin in the shared cache.

The orchestrator compiles (:mod:`.cuda_modules`: NVRTC in-process, or NVCC; see
:mod:`heterosymnn.toolchains.cuda_compiler`) the layer's fused source (see
:mod:`heterosymnn.codegen.cuda_source`) to a cubin per GPU architecture, stored,
locked and checksummed in the same cache as the C modules; CuPy only loads it,
with ``RawModule(path=...)``, and finds the kernels by their ``extern "C"`` names.
A warm construction reads the layer's record and the cubin and imports no SymPy.
Everything else is per device and kept per device: the loaded module (a second
device of the same architecture reuses the cubin; another architecture builds
once for it), and device copies of the node -> structure ids and of the
constants. ``set_device`` builds that state for another GPU and never touches
the symbolic front end (nor the code generator, for an architecture already built).

Nodes-first calls run the rows/elems kernels; the features-last layout and the
constants' gradient run the warp-tile kernels (:mod:`.cuda_tiles`). Every launch
goes to CuPy's current stream.

CuPy is imported inside :func:`build` only: importing heterosymnn never fails or
prints because CuPy is missing or broken; ``build`` turns every such problem
into a :class:`BackendUnavailableError` that says what is wrong and how to fix
it, and the compiler falls back to the CPU.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Dict, Optional

import numpy as np

from ..codegen.cuda_launch import plan_launch
from ..errors import BackendUnavailableError, HeteroSymNNError, InvalidDeviceIDError, ToolchainNotFoundError
from .base import GPU_CUDA
from .cuda_tiles import TileArrays, TileLayer, launch_tiles

GPU_INSTALL_HINT = ("pip install heterosymnn[gpu] (installs cupy-cuda12x; with a CUDA 13 driver "
                    "use cupy-cuda13x)")
PROBE_KERNEL = "hs_probe"
_MAX_LAUNCHES = 256  # cached launch configurations per device


def probe_source() -> str:
    """CUDA source of the 3-element probe kernel the doctor runs (``y = x*x + 1``)."""
    return (f'extern "C" __global__ void {PROBE_KERNEL}(const float *x, float *y, int n)\n'
            "{\n"
            "    int i = blockIdx.x * blockDim.x + threadIdx.x;\n"
            "    if (i < n) y[i] = x[i] * x[i] + 1.0f;\n"
            "}\n")


def import_cupy() -> Any:
    """CuPy, or a :class:`BackendUnavailableError` saying why it cannot be used."""
    try:
        import cupy
    except ImportError as exc:
        raise BackendUnavailableError(f"CuPy is not installed ({exc}); to use the GPU: {GPU_INSTALL_HINT}") from exc
    except Exception as exc:  # a broken install raises anything (OSError for a missing libcudart...)
        raise BackendUnavailableError(
            f"CuPy is installed but failed to import ({type(exc).__name__}: {exc}); reinstall the CuPy "
            f"package that matches your CUDA version: {GPU_INSTALL_HINT}") from exc
    return cupy


def device_count(cupy: Any) -> int:
    """Number of CUDA devices; no driver or no device is a :class:`BackendUnavailableError`."""
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:
        raise BackendUnavailableError(f"CUDA cannot be used ({type(exc).__name__}: {exc}){_driver_note(cupy)}") from exc
    if count == 0:
        raise BackendUnavailableError(f"no CUDA device found (CuPy sees 0 devices){_driver_note(cupy)}")
    return count


def _driver_note(cupy: Any) -> str:
    try:
        driver = int(cupy.cuda.runtime.driverGetVersion())
        runtime = int(cupy.cuda.runtime.runtimeGetVersion())
    except Exception:
        return "; check that an NVIDIA GPU and its driver are installed (nvidia-smi)"

    def text(v: int) -> str:
        return f"{v // 1000}.{v % 1000 // 10}"

    if driver == 0:
        return "; no NVIDIA driver is installed: install one (nvidia-smi must list the GPU)"
    if driver < runtime:
        return (f"; the NVIDIA driver supports CUDA {text(driver)} but CuPy was built for CUDA "
                f"{text(runtime)}: update the driver or install the CuPy for CUDA {driver // 1000}")
    return f"; driver for CUDA {text(driver)}, CuPy built for CUDA {text(runtime)}"


def device_arch(cupy: Any, device_id: int) -> str:
    """The ``sm_XY`` architecture of CUDA device ``device_id``."""
    return f"sm_{cupy.cuda.Device(device_id).compute_capability}"


def check_device_id(device_id: int, count: int) -> int:
    """``device_id`` if it names one of ``count`` devices, else :class:`InvalidDeviceIDError`."""
    if not 0 <= device_id < count:
        plural = "device" if count == 1 else "devices"
        ids = ", ".join(map(str, range(count)))
        raise InvalidDeviceIDError(f"device {device_id} does not exist; this machine has {count} CUDA "
                                   f"{plural} ({ids})")
    return device_id


@dataclasses.dataclass
class _DeviceState:
    """What one GPU holds: the loaded kernels, ids and constants, launch configs."""

    device_id: int
    arch: str
    functions: Dict[str, Any]
    ids: Any
    params: Any
    sm_count: int
    launches: Dict[tuple, Any]
    tiles: TileArrays


class CudaKernels:
    """Kernels of one layer on one GPU (see the module doc)."""

    method = GPU_CUDA

    def __init__(self, cupy: Any, module_for: Callable[[str], Any], plan: Any, params: np.ndarray,
                 device_id: int):
        self.array_module = cupy
        self._cp = cupy
        # arch -> CudaLayerModule (cuda_modules); other architectures are found or built on demand.
        self._module_for = module_for
        self._modules: Dict[str, Any] = {}
        module = self._module_by_arch(device_arch(cupy, device_id))
        self._module = module
        self._loss = plan.mode == "loss"
        self._rows = plan.n_nodes
        self._ids_host = np.array([module.cases[plan.structure_keys[s]] for s in plan.node_structure],
                                  dtype=np.int32)
        self._params_host = params
        self._stride = np.int64(params.shape[1])
        self._tiles = TileLayer(plan, module)
        self._devices: Dict[int, _DeviceState] = {}
        self._state = self._load(device_id)

    @property
    def source(self) -> str:
        """The generated CUDA source (kept beside the cubin in its cache entry)."""
        from .cuda_modules import SOURCE_FILE

        return (self._module.path.parent / SOURCE_FILE).read_text(encoding="utf-8")

    @property
    def module_path(self) -> str:
        """The cubin (or PTX) file the current device's kernels were loaded from."""
        return str(self._modules[self._state.arch].path)

    def _module_by_arch(self, arch: str) -> Any:
        module = self._modules.get(arch)
        if module is None:
            module = self._modules[arch] = self._module_for(arch)
        return module

    @property
    def device_id(self) -> int:
        return self._state.device_id

    # -- devices ---------------------------------------------------------------------------
    def _load(self, device_id: int) -> _DeviceState:
        cp = self._cp
        state = self._devices.get(device_id)
        with cp.cuda.Device(device_id):
            if state is None:
                arch = device_arch(cp, device_id)
                module = self._module_by_arch(arch)
                # One RawModule per device, made under it: CuPy loads the file into that context.
                raw = cp.RawModule(path=str(module.path))
                functions = {role: raw.get_function(name) for role, name in module.kernels.items()}
                state = _DeviceState(device_id, arch, functions, cp.asarray(self._ids_host),
                                     self._device_params(self._params_host),
                                     int(cp.cuda.runtime.getDeviceProperties(device_id)["multiProcessorCount"]),
                                     {}, self._tiles.device_arrays(cp))
                self._devices[device_id] = state
            else:  # constants may have changed while we were elsewhere
                state.params = self._device_params(self._params_host)
        return state

    def set_device(self, new_id: int) -> None:
        """Run on GPU ``new_id``: load the kernels there and copy ids and current constants."""
        check_device_id(new_id, device_count(self._cp))
        try:
            self._state = self._load(new_id)
        except HeteroSymNNError:
            raise
        except Exception as exc:
            raise BackendUnavailableError(f"the kernels could not be loaded on CUDA device {new_id}: "
                                          f"{type(exc).__name__}: {exc}") from exc

    def update_params(self, params: np.ndarray) -> None:
        # Copy-on-write, as on the CPU: a new device array published by one attribute store; a
        # launch reads ``state.params`` once, and one already queued keeps the old array (never
        # written again), so no kernel sees a mix. The copy into the new array is queued on the
        # current stream, before any launch that sees it on that stream (CuPy's default stream
        # is shared by all threads); other streams must be synchronised by the caller.
        self._params_host = params
        state = self._state
        with self._cp.cuda.Device(state.device_id):
            state.params = self._device_params(params)

    def _device_params(self, params: np.ndarray) -> Any:
        """A new device copy of ``params`` on the current device and stream."""
        return self._cp.asarray(np.ascontiguousarray(params, dtype=np.float64))

    # -- launches --------------------------------------------------------------------------
    def forward(self, a: Any, b: Optional[Any], out: Any, features_last: bool = False) -> None:
        inputs = (a, b if self._loss else None, None, out)
        if features_last:
            self._launch_tiles("forward_tiles", inputs, True)
        else:
            self._launch(0, *inputs)

    def backward(self, a: Any, b: Any, out: Any, constants_grad: Optional[Any] = None,
                 features_last: bool = False, grad: Optional[Any] = None) -> None:
        # A loss's span functions weigh by g when it is given (``grad``), as the C ones do.
        inputs = (a, b, grad, out) if self._loss else (a, None, b, out)
        if constants_grad is not None and self._tiles.n_constants:
            self._tiles.check_constants_grad()
            self._launch_tiles("backward_grad", inputs, features_last, constants_grad)
        elif features_last:  # a layer without constants has nothing more to write
            self._launch_tiles("backward_tiles", inputs, features_last)
        else:
            self._launch(1, *inputs)

    def empty(self, shape: tuple, dtype: Any) -> Any:
        """A new output array on this compiler's device (not the caller's current one)."""
        return self._on_device(self._state, (), lambda: self._cp.empty(shape, dtype=dtype))

    def _on_device(self, state: _DeviceState, arrays: tuple, run: Callable[[], Any]) -> Any:
        """``run()`` with ``state``'s device current, once every array is checked to live there."""
        device = state.device_id
        for array in arrays:
            if array is not None and array.data.device_id != device:
                raise ValueError(f"an array is on CUDA device {array.data.device_id}, but this compiler runs "
                                 f"on device {device}; copy it there (cupy.asarray under "
                                 f"`with cupy.cuda.Device({device}):`) or call set_gpu_id"
                                 f"({array.data.device_id})")
        if self._cp.cuda.runtime.getDevice() == device:  # the common case skips the context manager
            return run()
        with self._cp.cuda.Device(device):
            return run()

    def _launch(self, direction: int, a: Any, b: Optional[Any], g: Optional[Any], out: Any) -> None:
        state = self._state
        cols = a.size // self._rows
        launch = state.launches.get((direction, cols))
        if launch is None:
            launch = self._prepare(state, direction, cols)
        function, grid, block, rows, cols64 = launch
        args = (state.ids, state.params, self._stride, rows, cols64, a, b, g, out)
        self._on_device(state, (a, b, g, out), lambda: function(grid, block, args))

    def _prepare(self, state: _DeviceState, direction: int, cols: int) -> tuple:
        plan = plan_launch(self._rows, cols, state.sm_count)
        role = f"{'forward' if direction == 0 else 'backward'}_{plan.kind}"
        launch = (state.functions[role], plan.grid, plan.block, np.int64(self._rows), np.int64(cols))
        self._remember(state, (direction, cols), launch)
        return launch

    def _launch_tiles(self, role: str, inputs: tuple, features_last: bool, constants_grad: Any = None) -> None:
        state, tiles = self._state, self._tiles
        samples = inputs[0].size // self._rows
        key = (role, samples, features_last)
        planned = state.launches.get(key)
        if planned is None:
            grouping = tiles.grouping(samples, features_last)
            planned = self._remember(state, key, (grouping, tiles.plan(grouping, samples, state.sm_count)))
        grouping, launch = planned
        params = state.params  # read once: a concurrent set_constants swaps in a new array
        self._on_device(state, (*inputs, constants_grad), lambda: launch_tiles(
            self._cp, state.functions, state.tiles, tiles, launch, role, grouping, features_last, params,
            self._stride, inputs, constants_grad))

    @staticmethod
    def _remember(state: _DeviceState, key: tuple, launch: Any) -> Any:
        if len(state.launches) >= _MAX_LAUNCHES:
            state.launches.clear()
        state.launches[key] = launch
        return launch


def build(layer: Any, dtype: str, params: np.ndarray, device_id: int = 0) -> CudaKernels:
    """Backend entry point: find (or build) the layer's cubin in the cache and load it on ``device_id``.

    Raises
    ------
    BackendUnavailableError
        No CuPy, a broken CuPy, no driver, no device, no CUDA compiler, or
        the compiler rejected the source; the message says which and how to fix it.
    InvalidDeviceIDError
        ``device_id`` names no device (the message lists those that exist).
    """
    from ..cache import default_cache
    from ..toolchains.cuda_compiler import find_cuda_compiler
    from .cuda_modules import ensure_layer_module

    cupy = import_cupy()
    check_device_id(device_id, device_count(cupy))
    try:
        compiler = find_cuda_compiler()
    except (ToolchainNotFoundError, ValueError) as exc:
        raise BackendUnavailableError(f"no CUDA compiler to build the kernels: {exc}") from exc
    cache, plan = default_cache(), layer.plan

    def module_for(arch: str) -> Any:
        return ensure_layer_module(cache, plan.structure_keys, dtype, compiler, arch, layer.structures_for)

    try:
        return CudaKernels(cupy, module_for, plan, params, device_id)
    except HeteroSymNNError:
        raise
    except Exception as exc:  # CompileException, CUDARuntimeError, CUDADriverError ...
        raise BackendUnavailableError(
            f"the CUDA kernels could not be compiled or loaded on device {device_id} "
            f"({type(exc).__name__}: {exc}){_driver_note(cupy)}") from exc


def run_probe(device_id: int = 0) -> None:
    """Compile and run the probe kernel on 3 elements; raise BackendUnavailableError on any problem."""
    import tempfile

    from ..toolchains.cuda_compiler import find_cuda_compiler

    cupy = import_cupy()
    check_device_id(device_id, device_count(cupy))
    try:
        compiler = find_cuda_compiler()
    except (ToolchainNotFoundError, ValueError) as exc:
        raise BackendUnavailableError(f"no CUDA compiler: {exc}") from exc
    try:
        # The same path as the layers (our compiler, CuPy loads the file), outside the cache.
        binary = compiler.compile(probe_source(), device_arch(cupy, device_id))
        with tempfile.TemporaryDirectory(prefix="hs-probe-") as folder, cupy.cuda.Device(device_id):
            path = os.path.join(folder, f"probe.{binary.format}")
            with open(path, "wb") as handle:
                handle.write(binary.data)
            function = cupy.RawModule(path=path).get_function(PROBE_KERNEL)
            x = cupy.asarray(np.array([0.0, 1.0, 2.0], dtype=np.float32))
            y = cupy.full(3, np.nan, dtype=np.float32)
            function((1,), (32,), (x, y, np.int32(3)))
            result = cupy.asnumpy(y)
    except Exception as exc:
        raise BackendUnavailableError(f"the CUDA probe kernel failed on device {device_id} "
                                      f"({type(exc).__name__}: {exc}){_driver_note(cupy)}") from exc
    if not np.array_equal(result, np.array([1.0, 2.0, 5.0], dtype=np.float32)):
        raise BackendUnavailableError(f"the CUDA probe kernel computed {result.tolist()} instead of [1, 2, 5]")
