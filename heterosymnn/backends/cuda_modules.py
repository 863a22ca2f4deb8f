"""Compiled CUDA modules for GPU_CUDA: find a layer's cubin in the cache, build it if missing.

Two kinds of entries, through the same key/lock/publish/checksum path as the C modules:

* ``cuda-cubin`` (or ``cuda-ptx``): the artifact, one fused source compiled by one CUDA
  compiler for one target. Its key holds the source, the compiler's identity (name,
  version, path, options), the dtype and the target; its metadata the architecture,
  so ``python -m heterosymnn.cache list`` and ``builds.jsonl`` show what it is for.
  The source is kept beside it (``kernels.cu``) for inspection.
* ``cuda-layer``: a record keyed by the layer's set of structures, the dtype, the
  compiler and the device architecture, naming the artifact and what the backend needs
  to call it (kernel names, the structures' case numbers). A warm construction reads
  only this record and the artifact: no SymPy, no code generation, no compiler.

Many processes asking for the same missing layer build it once (the record's lock is
taken, the cache looked at again, then the build). A cubin that is truncated or
rewritten fails its checksum and is rebuilt; one whose ELF header names another
architecture is rejected and rebuilt too.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from ..cache import KernelCache, cache_key
from ..cache.layout import check_key
from ..cache.records import DamagedRecord
from ..toolchains.cuda_compiler import CudaCompiler, arch_number, elf_architecture
from ..deferred import get_logger

log = get_logger(__name__)

SOURCE_FILE = "kernels.cu"
_ARTIFACTS = {"cubin": "kernels.cubin", "ptx": "kernels.ptx"}
_KINDS = {"cubin": "cuda-cubin", "ptx": "cuda-ptx"}


@dataclasses.dataclass(frozen=True)
class CudaLayerModule:
    """Where a layer's compiled kernels are, and how to call them.

    Attributes
    ----------
    path : Path
        The cubin (or PTX) file inside its cache entry: what ``RawModule(path=...)`` loads.
    format, target, arch : str
        ``"cubin"``/``"ptx"``; what it was compiled for (``sm_80``/``compute_90``); the
        device architecture it serves.
    cases : dict
        Structure key -> the ``switch`` case the kernels dispatch it on.
    kernels : dict
        Kernel role -> ``extern "C"`` name.
    constants_grad_problems : dict
        Structure key -> why it has no constants' gradient.
    artifact_key, record_key : str
        The cache keys of the artifact and of the layer's record.
    """

    path: Path
    format: str
    target: str
    arch: str
    cases: Dict[str, int]
    kernels: Dict[str, str]
    constants_grad_problems: Dict[str, str]
    artifact_key: str
    record_key: str


def layer_record_key(structure_keys: Sequence[str], dtype: str, compiler: CudaCompiler, arch: str) -> str:
    """Key of a layer's record (computable without SymPy)."""
    shape = "structures:" + ",".join(sorted(set(structure_keys)))
    return cache_key("cuda-layer", source=shape, toolchain_identity=compiler.identity(),
                     flags=compiler.options, extra={"dtype": dtype, "arch": f"sm_{arch_number(arch)}"})


def artifact_key(source: str, dtype: str, compiler: CudaCompiler, arch: str) -> str:
    """Key of the compiled module of ``source`` for a device of architecture ``arch``."""
    fmt, target = compiler.target_for(arch)
    return cache_key(_KINDS[fmt], source=source, toolchain_identity=compiler.identity(),
                     flags=compiler.options, extra={"dtype": dtype, "target": target})


def ensure_layer_module(cache: KernelCache, structure_keys: Sequence[str], dtype: str, compiler: CudaCompiler,
                        arch: str, structures_for: Callable[[Sequence[str]], Sequence[Any]]) -> CudaLayerModule:
    """The layer's compiled module for ``arch``, built once (under its lock) when missing.

    ``structures_for(keys)`` gives the SymPy structures; it is only called to build.

    Raises
    ------
    JITCompilationError
        The compiler rejected the source (with its output).
    ToolchainNotFoundError, ValueError
        From the compiler (no compiler; an architecture it cannot target).
    """
    arch = f"sm_{arch_number(arch)}"
    keys = sorted(set(structure_keys))
    record = layer_record_key(keys, dtype, compiler, arch)

    def load(key: str, fields: Mapping[str, Any]) -> Optional[CudaLayerModule]:
        return _load(cache, key, fields)

    def build_missing(missing: List[str]) -> Dict[str, Dict[str, Any]]:
        return {record: _build(cache, keys, dtype, compiler, arch, structures_for)}

    return cache.resolve([record], load, build_missing)[record]


def _load(cache: KernelCache, record: str, fields: Mapping[str, Any]) -> Optional[CudaLayerModule]:
    key, fmt, target, arch = (fields.get(n) for n in ("module", "format", "target", "arch"))
    cases, kernels, problems = (fields.get(n) for n in ("cases", "kernels", "constants_grad_problems"))
    if not (_is_key(key) and fmt in _ARTIFACTS and isinstance(target, str) and isinstance(arch, str)
            and isinstance(cases, dict) and isinstance(kernels, dict) and isinstance(problems, dict)):
        raise DamagedRecord("its record does not name a CUDA module, its target and its kernels")
    entry = cache.lookup(key)  # checksummed: a truncated or rewritten file is a miss
    if entry is None:
        return None
    try:
        path = entry.file(_ARTIFACTS[fmt])
        if fmt == "cubin":
            with open(path, "rb") as handle:
                built_for = elf_architecture(handle.read(64))
            if built_for != target:
                cache.invalidate(entry, f"the cubin is for {built_for or 'no CUDA architecture'}, expected {target}")
                return None
    except (OSError, KeyError) as exc:
        cache.invalidate(entry, f"the CUDA module cannot be read: {exc}")
        return None
    return CudaLayerModule(Path(path), fmt, target, arch, {k: int(v) for k, v in cases.items()},
                           dict(kernels), dict(problems), key, record)


def _build(cache: KernelCache, keys: Sequence[str], dtype: str, compiler: CudaCompiler, arch: str,
           structures_for: Callable[[Sequence[str]], Sequence[Any]]) -> Dict[str, Any]:
    from ..codegen.cuda_source import render_cuda_module  # SymPy-based: only when building

    module = render_cuda_module(structures_for(keys), dtype)
    fmt, target = compiler.target_for(arch)
    key = artifact_key(module.source, dtype, compiler, arch)

    def builder(workdir: Path) -> Dict[str, Any]:
        start = time.perf_counter()
        log.info("compiling %d CUDA function(s) for %s with %s", len(module.cases), target, compiler.describe())
        binary = compiler.compile(module.source, arch)
        (workdir / _ARTIFACTS[fmt]).write_bytes(binary.data)
        (workdir / SOURCE_FILE).write_text(module.source, encoding="utf-8")
        log.info("compiled the CUDA module for %s in %.2f s", target, time.perf_counter() - start)
        # A PTX entry may serve several newer architectures: its "arch" is the virtual one it targets.
        return {"kind": _KINDS[fmt], "arch": target, "target": target,
                "format": fmt, "dtype": dtype, "functions": len(module.cases),
                "toolchain": f"{compiler.describe()} -> {target}", "artifact": _ARTIFACTS[fmt]}

    cache.build(key, builder)
    return {"kind": "cuda-layer", "module": key, "format": fmt, "target": target, "arch": arch,
            "cases": dict(module.cases), "kernels": dict(module.kernels),
            "constants_grad_problems": dict(module.constants_grad_problems)}


def _is_key(value: Any) -> bool:
    try:
        check_key(value)
    except (ValueError, TypeError):
        return False
    return True
