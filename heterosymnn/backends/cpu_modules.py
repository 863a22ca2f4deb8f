"""Built C modules for CPU_JIT: find them in the cache, build what is missing, load them.

The unit of caching is one *structure* (one distinct formula shape) per dtype
and toolchain: its cache entry is a small record pointing at the compiled
module that holds its row functions. All structures missing for one layer are
compiled together (one compiler run, or a few in parallel when there are
many), so a layer whose functions are all known loads without any compiler
call, and a layer adding one new function compiles just that one.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import importlib.machinery
import importlib.util
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..cache import KernelCache, cache_key
from ..cache.layout import check_key
from ..config import settings
from ..errors import JITCompilationError
from ..toolchains import Toolchain, isa
from .cffi_build import BuildRequest, build_extension

log = logging.getLogger(__name__)

LIBMVEC_DEFINE = "-DHS_USE_LIBMVEC"
# Above this many new functions, split the build over parallel compiler processes.
FUNCTIONS_PER_BUILD = 24


@dataclasses.dataclass(frozen=True)
class RowFunctions:
    """Where a structure's compiled row functions live."""

    module: Any  # the loaded cffi extension module (has .ffi and .lib)
    forward: str
    backward: str


def _compile_args(toolchain: Toolchain) -> Tuple[str, ...]:
    args = tuple(toolchain.compile_args)
    if any(arg in ("-lmvec", "mvec.lib") for arg in toolchain.link_args):
        args += (LIBMVEC_DEFINE,)
    return args


def _key(kind: str, source: str, toolchain: Toolchain, dtype: str) -> str:
    return cache_key(kind, source=source, toolchain_identity=toolchain.identity(),
                     flags=_compile_args(toolchain) + tuple(toolchain.link_args),
                     extra={"dtype": dtype, "openmp": str(toolchain.openmp)})


def structure_entry_key(structure_key: str, toolchain: Toolchain, dtype: str) -> str:
    """Cache key of one structure's record (computable without SymPy or source)."""
    return _key("c-structure", f"structure:{structure_key}", toolchain, dtype)


def load_extension(cache: KernelCache, module_key: str) -> Optional[Any]:
    """The loaded extension module of a cache entry, or None when it is missing or broken."""
    module = cache.recall(module_key)
    if module is not None:
        return module
    entry = cache.lookup(module_key)
    if entry is None or not _runs_here(cache, entry):
        return None
    name = entry.meta.get("module_name")
    try:
        path = entry.file(entry.meta["artifact"])
        loader = importlib.machinery.ExtensionFileLoader(name, str(path))
        spec = importlib.util.spec_from_file_location(name, str(path), loader=loader)
        module = importlib.util.module_from_spec(spec)
        loader.exec_module(module)
    except (ImportError, OSError, KeyError, TypeError) as exc:
        cache.invalidate(entry, f"the compiled module could not be loaded: {exc}")
        return None
    cache.remember(module_key, module)
    return module


def _runs_here(cache: KernelCache, entry: Any) -> bool:
    """Whether this CPU can run the entry's code; checked before loading, never after a SIGILL.

    Keys hold the toolchain's level, so a mismatch means the entry came from elsewhere under a
    key it should not have (a copied cache, an edited record): it stays for the machines it
    suits, and this one does not load it.
    """
    level = entry.meta.get("isa")
    if not isinstance(level, str):
        cache.invalidate(entry, "its record does not say which instruction set it was built for")
        return False
    if isa.runs_on(level, isa.host_level()):
        return True
    log.warning("not loading %s: built for %s, which this CPU (%s) cannot run",
                entry.path, level, isa.host_level())
    return False


def build_module(cache: KernelCache, kind: str, module_prefix: str, source: str, cdef: str,
                 toolchain: Toolchain, dtype: str, functions: int) -> Any:
    """Compile (or find) one extension module for ``source`` and load it."""
    module_key = _key(kind, source, toolchain, dtype)
    module = load_extension(cache, module_key)
    if module is not None:
        return module
    module_name = f"{module_prefix}_{module_key[:20]}"
    failed_source = cache.root / "failed" / f"{module_name}.c"

    def builder(workdir: Path) -> Dict[str, Any]:
        request = BuildRequest(
            module_name=module_name, source=source, cdef=cdef,
            compile_args=_compile_args(toolchain), link_args=tuple(toolchain.link_args),
            env=tuple(toolchain.build_env), compiler_type=toolchain.compiler_type)
        what = f"{functions} function(s)" if functions else f"the {dtype} layer driver"
        log.info("compiling %s with %s %s", what, toolchain.name, toolchain.version)
        result = build_extension(request, workdir / "build", settings().build_timeout, failed_source)
        artifact = result.artifact.name
        os.replace(result.artifact, workdir / artifact)
        _remove_tree(workdir / "build")
        return {"module_name": module_name, "artifact": artifact, "functions": functions,
                "toolchain": f"{toolchain.name} {toolchain.version}", "kind": kind, "dtype": dtype,
                "isa": toolchain.isa}

    entry = cache.build(module_key, builder)
    module = load_extension(cache, module_key)
    if module is None:
        level = entry.meta.get("isa")
        if isinstance(level, str) and not isa.runs_on(level, isa.host_level()):
            raise JITCompilationError(
                f"the cached module {module_name} was built for {level}, which this CPU "
                f"({isa.host_level()}) cannot run, under the key of a toolchain for this CPU "
                f"({toolchain.describe()}); the cache at {cache.root} was probably copied from "
                f"another machine. Fix: run `python -m heterosymnn.cache clear`, or set "
                f"HETEROSYMNN_CACHE_DIR to a cache of this machine's own")
        raise JITCompilationError(f"the module {module_name} was built but could not be loaded")
    return module


def find_structures(cache: KernelCache, keys: Sequence[str], toolchain: Toolchain,
                    dtype: str) -> Dict[str, RowFunctions]:
    """Row functions of the structures already in the cache (the others are absent)."""
    found: Dict[str, RowFunctions] = {}
    for key in keys:
        entry = cache.lookup(structure_entry_key(key, toolchain, dtype))
        if entry is None:
            continue
        module_key, forward, backward = (entry.meta.get(name) for name in ("module", "forward", "backward"))
        if not (_is_key(module_key) and isinstance(forward, str) and isinstance(backward, str)):
            cache.invalidate(entry, "its record does not name a module and two functions")
            continue
        module = load_extension(cache, module_key)
        if module is None:
            continue
        if not (hasattr(module.lib, forward) and hasattr(module.lib, backward)):
            # meta.json is not checksummed: an edited record must not reach the C call.
            cache.invalidate(entry, f"its module has no function {forward!r} or {backward!r}")
            continue
        found[key] = RowFunctions(module, forward, backward)
    return found


def _is_key(value: Any) -> bool:
    try:
        check_key(value)
    except ValueError:
        return False
    return True


def ensure_structures(cache: KernelCache, keys: Sequence[str], toolchain: Toolchain, dtype: str,
                      structures_for: Callable[[Sequence[str]], Sequence[Any]]) -> Dict[str, RowFunctions]:
    """Row functions of every structure in ``keys``, compiling the missing ones.

    ``structures_for(keys)`` returns the symbolic structures to compile; it is
    only called when something is missing (so a warm start never needs SymPy).
    """
    found = find_structures(cache, keys, toolchain, dtype)
    missing = [k for k in dict.fromkeys(keys) if k not in found]
    if not missing:
        return found
    record_keys = [structure_entry_key(k, toolchain, dtype) for k in missing]
    with cache.locked(record_keys):
        # Another process may have built them while we waited for the locks.
        found.update(find_structures(cache, missing, toolchain, dtype))
        missing = [k for k in missing if k not in found]
        if missing:
            found.update(_compile(cache, missing, toolchain, dtype, structures_for))
    return found


def _compile(cache: KernelCache, missing: List[str], toolchain: Toolchain, dtype: str,
             structures_for: Callable[[Sequence[str]], Sequence[Any]]) -> Dict[str, RowFunctions]:
    from ..codegen.c_source import render_c_module  # SymPy-based: only when compiling

    structures = list(structures_for(missing))
    n_builds = max(1, math.ceil(len(structures) / FUNCTIONS_PER_BUILD))
    groups = [structures[i::n_builds] for i in range(n_builds)]

    def build_group(group: Sequence[Any]) -> Tuple[Sequence[Any], Any, Any]:
        generated = render_c_module(group, dtype)
        module = build_module(cache, "c-module", "_hsnn_rows", generated.source, generated.cdef,
                              toolchain, dtype, functions=len(group))
        return group, generated, module

    def record(group: Sequence[Any], generated: Any, module: Any) -> Dict[str, RowFunctions]:
        # Runs in the calling thread: it holds the records' locks (re-entrant for it
        # only), so a pool thread publishing them would wait for itself until timeout.
        rows = {}
        for structure in group:
            forward, backward = generated.functions[structure.key]
            record_key = structure_entry_key(structure.key, toolchain, dtype)
            fields = {"bookkeeping": True, "module": _key("c-module", generated.source, toolchain, dtype),
                      "forward": forward, "backward": backward}
            entry = cache.publish(record_key, {}, fields)
            if entry.meta.get("module") != fields["module"]:
                # The record pointed at a module that is gone (pruned): kept, it would
                # send every later layer using this structure to the compiler again.
                cache.discard(entry)
                cache.publish(record_key, {}, fields)
            rows[structure.key] = RowFunctions(module, forward, backward)
        return rows

    start = time.perf_counter()
    result: Dict[str, RowFunctions] = {}
    if len(groups) == 1:
        result.update(record(*build_group(groups[0])))
    else:
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(len(groups), os.cpu_count() or 2)) as pool:
            built = list(pool.map(build_group, groups))
        for group, generated, module in built:
            result.update(record(group, generated, module))
    log.info("compiled %d new function(s) in %.2f s", len(structures), time.perf_counter() - start)
    return result


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
