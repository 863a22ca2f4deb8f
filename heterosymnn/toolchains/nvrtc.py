"""NVRTC, the CUDA runtime compiler, usable without a GPU.

CuPy's high-level compile needs a device, but NVRTC itself does not: it turns
CUDA C++ into PTX (or a cubin) for any ``-arch``. That lets a CPU-only machine
check that the generated CUDA compiles for every architecture we support.

:func:`find_nvrtc` tries, in order, and remembers why each one failed:

1. ``cupy.cuda.nvrtc`` -- the NVRTC CuPy itself uses, when CuPy imports;
2. ``cuda.bindings.nvrtc`` -- NVIDIA's ``cuda-python``/``cuda-bindings``;
3. the NVRTC shared library loaded directly with ctypes: from the
   ``nvidia-cuda-nvrtc-cu12`` (or ``nvidia-cuda-nvrtc``) wheel, a CUDA
   toolkit under ``CUDA_PATH``/``CUDA_HOME``, or the system library path.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import functools
import glob
import importlib
import os
import sys
from typing import Any, Callable, List, Sequence, Tuple

from ..errors import JITCompilationError, ToolchainNotFoundError

INSTALL_HINT = ("install one with `pip install nvidia-cuda-nvrtc-cu12` (any OS, no GPU needed) "
                "or `pip install heterosymnn[gpu]` (CuPy)")

# compile(source, name, options, cubin) -> (code, log); raises _NvrtcFailure(log)
Compile = Callable[[str, str, Sequence[str], bool], Tuple[bytes, str]]


def _text(data: bytes) -> str:
    return data.rstrip(b"\x00").decode("utf-8", "replace")


class _NvrtcFailure(Exception):
    def __init__(self, log: str):
        super().__init__(log)
        self.log = log


@dataclasses.dataclass(frozen=True)
class Nvrtc:
    """A loaded NVRTC.

    Attributes
    ----------
    provider : str
        ``"cupy"``, ``"cuda-bindings"`` or ``"library"`` (ctypes).
    version : (int, int)
        NVRTC's (major, minor) version.
    location : str
        The module or shared library it came from.
    architectures : tuple of str
        The real architectures it can build cubins for (``"sm_75"``, ...), from
        ``nvrtcGetSupportedArchs``; empty when that query is unavailable.
    """

    provider: str
    version: Tuple[int, int]
    location: str
    _compile: Compile = dataclasses.field(repr=False, compare=False)
    architectures: Tuple[str, ...] = ()

    @property
    def version_text(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"

    def compile(self, source: str, arch: str = "sm_80", options: Sequence[str] = (),
                *, cubin: bool = False, name: str = "heterosymnn.cu") -> Tuple[bytes, str]:
        """Compile ``source`` to PTX (``compute_XX``) or, with ``cubin``, SASS (``sm_XX``).

        Returns the code and NVRTC's log (empty when there is nothing to say).

        Raises
        ------
        JITCompilationError
            NVRTC rejected the source; the message carries its log.
        """
        number = arch.split("_", 1)[-1]
        target = f"{'sm' if cubin else 'compute'}_{number}"
        opts = [f"--gpu-architecture={target}", *options]
        try:
            code, log = self._compile(source, name, opts, cubin)
        except _NvrtcFailure as exc:
            raise JITCompilationError(f"NVRTC {self.version[0]}.{self.version[1]} could not compile "
                                      f"{name} for {target}", compiler_output=exc.log) from None
        return code, log.strip().rstrip("\x00")


def compile_ptx(source: str, arch: str = "sm_80", options: Sequence[str] = ()) -> Tuple[str, str]:
    """PTX of ``source`` for ``arch`` and NVRTC's log, with the first NVRTC found.

    Raises
    ------
    ToolchainNotFoundError
        No NVRTC could be loaded (the message says why for each way tried).
    JITCompilationError
        NVRTC rejected the source (the message carries its log).
    """
    code, log = find_nvrtc().compile(source, arch, options)
    return code.decode("utf-8", "replace").rstrip("\x00"), log


@functools.lru_cache(maxsize=None)
def find_nvrtc() -> Nvrtc:
    """The first usable NVRTC (cached); :class:`ToolchainNotFoundError` says why there is none."""
    reasons: List[str] = []
    for provider, loader in (("cupy", _from_cupy), ("cuda-bindings", _from_cuda_bindings),
                             ("library", _from_library)):
        try:
            return loader()
        except Exception as exc:  # each way can fail in its own manner; report them all
            reasons.append(f"{provider}: {type(exc).__name__}: {exc}")
    raise ToolchainNotFoundError("no NVRTC could be loaded; " + INSTALL_HINT + "\n  " + "\n  ".join(reasons))


# -- CuPy ----------------------------------------------------------------------------------------
def _from_cupy() -> Nvrtc:
    nvrtc = importlib.import_module("cupy.cuda.nvrtc")
    major, minor = nvrtc.getVersion()

    def compile_(source: str, name: str, options: Sequence[str], cubin: bool) -> Tuple[bytes, str]:
        prog = nvrtc.createProgram(source, name, (), ())
        try:
            try:
                nvrtc.compileProgram(prog, list(options))
            except nvrtc.NVRTCError as exc:
                raise _NvrtcFailure(nvrtc.getProgramLog(prog) or str(exc)) from None
            code = nvrtc.getCUBIN(prog) if cubin else nvrtc.getPTX(prog)
            return (code.encode() if isinstance(code, str) else bytes(code)), nvrtc.getProgramLog(prog)
        finally:
            nvrtc.destroyProgram(prog)

    archs = _arch_names(_quietly(lambda: list(nvrtc.getSupportedArchs())))
    return Nvrtc("cupy", (int(major), int(minor)), nvrtc.__file__, compile_, archs)


# -- cuda-bindings -------------------------------------------------------------------------------
def _from_cuda_bindings() -> Nvrtc:
    nvrtc = importlib.import_module("cuda.bindings.nvrtc")
    ok = nvrtc.nvrtcResult.NVRTC_SUCCESS
    err, major, minor = nvrtc.nvrtcVersion()
    if err != ok:
        raise OSError(f"nvrtcVersion failed: {err}")

    def fetch(prog: Any, size_fn: Callable, get_fn: Callable) -> bytes:
        _, size = size_fn(prog)
        buffer = b" " * size
        get_fn(prog, buffer)
        return buffer

    def compile_(source: str, name: str, options: Sequence[str], cubin: bool) -> Tuple[bytes, str]:
        err, prog = nvrtc.nvrtcCreateProgram(source.encode(), name.encode(), 0, [], [])
        if err != ok:
            raise _NvrtcFailure(f"nvrtcCreateProgram failed: {err}")
        try:
            (err,) = nvrtc.nvrtcCompileProgram(prog, len(options), [o.encode() for o in options])
            log = _text(fetch(prog, nvrtc.nvrtcGetProgramLogSize, nvrtc.nvrtcGetProgramLog))
            if err != ok:
                raise _NvrtcFailure(log or str(err))
            if cubin:
                return fetch(prog, nvrtc.nvrtcGetCUBINSize, nvrtc.nvrtcGetCUBIN), log
            return fetch(prog, nvrtc.nvrtcGetPTXSize, nvrtc.nvrtcGetPTX).rstrip(b"\x00"), log
        finally:
            nvrtc.nvrtcDestroyProgram(prog)

    archs = _arch_names(_quietly(lambda: list(nvrtc.nvrtcGetSupportedArchs()[1])))
    return Nvrtc("cuda-bindings", (int(major), int(minor)), nvrtc.__file__, compile_, archs)


# -- the shared library through ctypes -----------------------------------------------------------
def _library_candidates() -> List[str]:
    if sys.platform == "win32":
        patterns = ["nvrtc64_*.dll"]
        subdirs = ["bin", os.path.join("bin", "x64")]
    else:
        patterns = ["libnvrtc.so.[0-9]*", "libnvrtc.so"]
        subdirs = ["lib", "lib64"]
    roots: List[str] = []
    try:  # pip wheels: nvidia/cuda_nvrtc (CUDA 12) and nvidia/cu13 (CUDA 13)
        nvidia = importlib.import_module("nvidia")
        for base in getattr(nvidia, "__path__", []):
            roots += [os.path.join(base, "cuda_nvrtc"), os.path.join(base, "cu13")]
    except ImportError:
        pass
    roots += [os.environ[v] for v in ("CUDA_PATH", "CUDA_HOME") if os.environ.get(v)]
    found: List[str] = []
    for root in roots:
        for sub in subdirs:
            for pattern in patterns:
                # never the builtins library or the ".alt" variant, only the compiler
                found += sorted((p for p in glob.glob(os.path.join(root, sub, pattern))
                                 if "builtins" not in os.path.basename(p)), reverse=True)
    system = ctypes.util.find_library("nvrtc")
    return found + ([system] if system else [])


def _from_library() -> Nvrtc:
    candidates = _library_candidates()
    if not candidates:
        raise OSError("no NVRTC shared library in the nvidia wheels, CUDA_PATH/CUDA_HOME or the "
                      "library path")
    errors = []
    for path in candidates:
        try:
            return _wrap_library(ctypes.CDLL(path), path)
        except (OSError, AttributeError) as exc:
            errors.append(f"{path}: {exc}")
    raise OSError("; ".join(errors))


def _wrap_library(lib: Any, path: str) -> Nvrtc:
    c_int, c_size_t, c_char_p = ctypes.c_int, ctypes.c_size_t, ctypes.c_char_p
    lib.nvrtcGetErrorString.restype = c_char_p
    major, minor = c_int(), c_int()
    if lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)) != 0:
        raise OSError("nvrtcVersion failed")

    def fetch(prog: ctypes.c_void_p, size_fn: Any, get_fn: Any) -> bytes:
        size = c_size_t()
        size_fn(prog, ctypes.byref(size))
        buffer = ctypes.create_string_buffer(size.value)
        get_fn(prog, buffer)
        return buffer.raw

    def compile_(source: str, name: str, options: Sequence[str], cubin: bool) -> Tuple[bytes, str]:
        prog = ctypes.c_void_p()
        status = lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None, None)
        if status != 0:
            raise _NvrtcFailure(f"nvrtcCreateProgram failed: {lib.nvrtcGetErrorString(status).decode()}")
        try:
            encoded = [o.encode() for o in options]
            array = (c_char_p * len(encoded))(*encoded)
            status = lib.nvrtcCompileProgram(prog, len(encoded), array)
            log = _text(fetch(prog, lib.nvrtcGetProgramLogSize, lib.nvrtcGetProgramLog))
            if status != 0:
                raise _NvrtcFailure(log or lib.nvrtcGetErrorString(status).decode())
            if cubin:
                return fetch(prog, lib.nvrtcGetCUBINSize, lib.nvrtcGetCUBIN), log
            return fetch(prog, lib.nvrtcGetPTXSize, lib.nvrtcGetPTX).rstrip(b"\x00"), log
        finally:
            lib.nvrtcDestroyProgram(ctypes.byref(prog))

    return Nvrtc("library", (major.value, minor.value), path, compile_, _library_archs(lib))


def _library_archs(lib: Any) -> Tuple[str, ...]:
    def query() -> List[int]:
        count = ctypes.c_int()
        if lib.nvrtcGetNumSupportedArchs(ctypes.byref(count)) != 0:
            return []
        numbers = (ctypes.c_int * count.value)()
        if lib.nvrtcGetSupportedArchs(numbers) != 0:
            return []
        return list(numbers)

    return _arch_names(_quietly(query))


def _quietly(query: Callable[[], List[int]]) -> List[int]:
    # The query appeared in NVRTC 11.2: an older one still compiles, it just cannot list them.
    try:
        return [int(n) for n in query()]
    except Exception:
        return []


def _arch_names(numbers: Sequence[int]) -> Tuple[str, ...]:
    return tuple(f"sm_{n}" for n in sorted(set(numbers)))
