"""Which CUDA compiler turns the fused source into a cubin, and for which target.

Two detectors (:mod:`.nvrtc`, in-process, and :mod:`.nvcc`, the toolkit's
compiler) behind one frozen :class:`CudaCompiler`: its :meth:`~CudaCompiler.identity`
(compiler, version, path, options) goes into the cache key, and
:meth:`~CudaCompiler.compile` returns a :class:`CudaBinary`.

Selection (:func:`find_cuda_compiler`): ``HETEROSYMNN_CUDA_COMPILER=nvrtc|nvcc``
forces one (an error naming why when it does not work), else NVRTC when it
loads, else NVCC.

Targets (:meth:`CudaCompiler.target_for`): a cubin (SASS) for ``sm_XY`` when the
compiler knows that architecture; for an architecture newer than the compiler
knows, PTX for the newest one it knows below it, which the driver's JIT
compiles for the device when the module is loaded (once per process and
device; the driver keeps its own JIT cache, ``CUDA_CACHE_PATH``). An
architecture older than every one it knows is an error.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Callable, List, Optional, Sequence, Tuple

from ..codegen.cuda_launch import CUDA_OPTIONS
from ..config import settings
from ..errors import ToolchainNotFoundError
from . import nvcc as nvcc_module
from . import nvrtc as nvrtc_module

ENV_COMPILER = "HETEROSYMNN_CUDA_COMPILER"
NAMES = ("nvrtc", "nvcc")
_ARCH = re.compile(r"sm_(\d+)")

# compile(source, target, cubin, options) -> (code, log)
_Compile = Callable[[str, str, bool, Sequence[str]], Tuple[bytes, str]]


@dataclasses.dataclass(frozen=True)
class CudaBinary:
    """A compiled CUDA module.

    Attributes
    ----------
    data : bytes
        The cubin (an ELF file) or the PTX text.
    format : str
        ``"cubin"`` or ``"ptx"`` (the driver JIT-compiles PTX when it loads it).
    target : str
        What it was compiled for: ``"sm_80"`` (cubin) or ``"compute_90"`` (PTX).
    log : str
        The compiler's messages (usually empty).
    """

    data: bytes
    format: str
    target: str
    log: str = ""


@dataclasses.dataclass(frozen=True)
class CudaCompiler:
    """A usable CUDA compiler (see the module doc)."""

    name: str
    version: str
    path: str
    architectures: Tuple[str, ...]
    _compile: _Compile = dataclasses.field(repr=False, compare=False)
    options: Tuple[str, ...] = CUDA_OPTIONS

    def identity(self) -> str:
        """What names this compiler in a cache key: name, version, path and options."""
        return json.dumps({"compiler": self.name, "version": self.version, "path": self.path,
                           "options": list(self.options)}, sort_keys=True)

    def describe(self) -> str:
        return f"{self.name} {self.version}"

    def target_for(self, arch: str) -> Tuple[str, str]:
        """``(format, target)`` to build for device architecture ``arch`` (``"sm_80"``).

        Raises
        ------
        ValueError
            ``arch`` is not ``sm_<number>``, or older than every architecture
            this compiler supports.
        """
        number = arch_number(arch)
        known = sorted(arch_number(a) for a in self.architectures)
        if not known or number in known:
            return "cubin", f"sm_{number}"
        below = [n for n in known if n < number]
        if not below:
            raise ValueError(f"{self.describe()} cannot compile for {arch}: the oldest architecture it "
                             f"supports is sm_{known[0]}; use an older CUDA toolkit or NVRTC for this GPU")
        return "ptx", f"compute_{below[-1]}"

    def compile(self, source: str, arch: str) -> CudaBinary:
        """Compile ``source`` for a device of architecture ``arch`` (see :meth:`target_for`).

        Raises
        ------
        JITCompilationError
            The compiler rejected the source or timed out (with its output).
        """
        fmt, target = self.target_for(arch)
        code, log = self._compile(source, target, fmt == "cubin", self.options)
        return CudaBinary(code, fmt, target, log)


@dataclasses.dataclass(frozen=True)
class CudaCompilerStatus:
    """One detector's answer: the compiler, or why there is none and how to fix it."""

    name: str
    compiler: Optional[CudaCompiler]
    reason: Optional[str] = None
    fix: Optional[str] = None

    @property
    def usable(self) -> bool:
        return self.compiler is not None


def arch_number(arch: str) -> int:
    """``"sm_80"`` -> 80; anything else is a ValueError naming the expected form."""
    match = _ARCH.fullmatch(str(arch).strip())
    if match is None:
        raise ValueError(f"{arch!r} is not a CUDA architecture; write it as sm_<major><minor>, e.g. sm_80 "
                         f"(A100) or sm_90 (H100)")
    return int(match.group(1))


def _from_nvrtc() -> CudaCompiler:
    found = nvrtc_module.find_nvrtc()

    def compile_(source: str, target: str, cubin: bool, options: Sequence[str]) -> Tuple[bytes, str]:
        return found.compile(source, target, options, cubin=cubin)

    return CudaCompiler("nvrtc", found.version_text, f"{found.provider}:{found.location}",
                        found.architectures, compile_)


def _from_nvcc() -> CudaCompiler:
    from ..config import settings

    found = nvcc_module.find_nvcc()

    def compile_(source: str, target: str, cubin: bool, options: Sequence[str]) -> Tuple[bytes, str]:
        return found.compile(source, target, options, cubin=cubin, timeout=settings().build_timeout)

    return CudaCompiler("nvcc", found.build.lstrip("V"), found.path, found.architectures, compile_)


_DETECTORS = {"nvrtc": (_from_nvrtc, nvrtc_module.INSTALL_HINT), "nvcc": (_from_nvcc, nvcc_module.INSTALL_HINT)}


def detect(name: str) -> CudaCompilerStatus:
    """Run one detector (``"nvrtc"`` or ``"nvcc"``); never raises."""
    loader, fix = _DETECTORS[name]
    try:
        return CudaCompilerStatus(name, loader())
    except Exception as exc:  # every detector failure is a reason to report, not a crash
        return CudaCompilerStatus(name, None, f"{type(exc).__name__}: {exc}", fix)


def detect_cuda_compilers() -> List[CudaCompilerStatus]:
    """Every CUDA compiler detector, in preference order (for the doctor)."""
    return [detect(name) for name in NAMES]


def forced_compiler() -> Optional[str]:
    """``HETEROSYMNN_CUDA_COMPILER``, checked; None when unset."""
    value = (settings().cuda_compiler or "").strip().lower()
    if not value:
        return None
    if value not in NAMES:
        raise ValueError(f"{ENV_COMPILER}={value!r} is not a CUDA compiler; use 'nvrtc' or 'nvcc', or unset it")
    return value


def find_cuda_compiler(name: Optional[str] = None) -> CudaCompiler:
    """The CUDA compiler to use: ``name``, else ``HETEROSYMNN_CUDA_COMPILER``, else NVRTC, else NVCC.

    Raises
    ------
    ToolchainNotFoundError
        None works (or the forced one does not); the message says why for each.
    """
    forced = name or forced_compiler()
    order: Sequence[str] = (forced,) if forced else NAMES
    statuses = [detect(n) for n in order]
    for status in statuses:
        if status.compiler is not None:
            return status.compiler
    head = f"the CUDA compiler {forced} (forced by {ENV_COMPILER}) is not usable" if forced and not name \
        else "no CUDA compiler found"
    lines = [head] + [f"  {s.name}: {s.reason}\n    fix: {s.fix}" for s in statuses]
    raise ToolchainNotFoundError("\n".join(lines))


def clear_caches() -> None:
    """Forget detected CUDA compilers (after changing the environment)."""
    nvrtc_module.find_nvrtc.cache_clear()
    nvcc_module.clear_cache()


def elf_architecture(data: bytes) -> Optional[str]:
    """The ``sm_XY`` a cubin was built for, read from its ELF header; None if not a CUDA ELF.

    NVIDIA's ELF (``e_machine`` 190, EM_CUDA) stores the architecture in ``e_flags``:
    its low byte in ABI version 7, the next byte in ABI version 8 (CUDA 12.8+).
    """
    if len(data) < 52 or data[:4] != b"\x7fELF" or data[4] != 2:  # 64-bit ELF only
        return None
    if int.from_bytes(data[18:20], "little") != 190:
        return None
    flags = int.from_bytes(data[48:52], "little")
    number = (flags >> 8) & 0xFF if data[8] >= 8 else flags & 0xFF
    return f"sm_{number}" if number else None
