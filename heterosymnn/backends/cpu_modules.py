"""Built C modules for CPU_JIT: find them in the cache, build what is missing, load them.

The unit of caching is one *structure* (one distinct formula shape) per dtype
and toolchain: its cache entry is a small record pointing at the compiled
module that holds its row functions. All structures missing for one layer are
compiled together (one compiler run, or one per core in parallel when each
gets at least 4 of them, see :func:`compiler_runs`), so a layer whose functions
are all known loads without any compiler call, and a layer adding one new
function compiles just that one.

The constants-gradient functions (training only) are not part of that build:
:func:`ensure_constants_grad` builds them, on the first call asking for the
constants' gradient, in modules of their own, under records of their own kind
("c-structure-cgrad"), so inference and neuroevolution never derive with respect
to the constants nor compile those functions.
"""
from __future__ import annotations

import dataclasses
import importlib.machinery
import importlib.util
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ..cache import KernelCache, cache_key
from ..cache.records import DamagedRecord
from ..cache.layout import check_key
from ..codegen.c_exports import exported_functions
from ..config import settings
from ..errors import JITCompilationError
from ..toolchains import Toolchain, flags, isa
from ..deferred import get_logger

log = get_logger(__name__)

# At most this many new functions per compiler run; more are split over parallel runs.
FUNCTIONS_PER_BUILD = 24
# At least this many per run when a build is split only to use the idle cores: a compiler run
# costs ~0.25 s before it compiles anything (a Python child importing cffi and setuptools, ~0.2 s;
# GCC reading Python.h and linking, ~0.08 s), and a structure (its forward and backward) ~0.035 s
# at -O3 (measured with GCC 12 on a 2-core x86-64-v3 machine), so 8 new structures build in
# ~0.45 s on two cores instead of ~0.6 s in one run.
FUNCTIONS_PER_PARALLEL_BUILD = 4


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def compiler_runs(functions: int, cores: int) -> int:
    """How many compiler runs build ``functions`` new functions on ``cores`` cores.

    Never more than 24 functions in one run (one huge translation unit compiles slower than
    two halves on one core), and the cores shared out while each run keeps at least 4.
    """
    needed = math.ceil(functions / FUNCTIONS_PER_BUILD)
    spread = min(max(cores, 1), functions // FUNCTIONS_PER_PARALLEL_BUILD)
    return max(1, needed, spread)


@dataclasses.dataclass(frozen=True)
class RowFunctions:
    """Where a structure's compiled row functions live."""

    module: Any  # the loaded cffi extension module (has .ffi and .lib), kept alive by its users
    forward: str
    backward: str
    forward_address: int
    backward_address: int


@dataclasses.dataclass(frozen=True)
class ConstantsGradFunction:
    """Where a structure's constants-gradient row function lives (structures with constants)."""

    module: Any  # the loaded cffi extension module, or None with ``problem``
    name: Optional[str]
    address: int = 0
    problem: Optional[str] = None
    """Why it has none (its derivative for a constant could not be made or printed)."""


def _compile_args(toolchain: Toolchain) -> Tuple[str, ...]:
    return flags.build_compile_args(toolchain.compile_args, toolchain.link_args)


def module_entry_key(kind: str, source: str, toolchain: Toolchain, dtype: str) -> str:
    """Cache key of the extension module of ``kind`` built from ``source`` with ``toolchain``."""
    return cache_key(kind, source=source, toolchain_identity=toolchain.identity(),
                     flags=_compile_args(toolchain) + tuple(toolchain.link_args),
                     extra={"dtype": dtype, "openmp": str(toolchain.openmp)})


def structure_entry_key(structure_key: str, toolchain: Toolchain, dtype: str) -> str:
    """Cache key of one structure's record (computable without SymPy or source)."""
    return module_entry_key("c-structure", f"structure:{structure_key}", toolchain, dtype)


def constants_grad_entry_key(structure_key: str, toolchain: Toolchain, dtype: str) -> str:
    """Cache key of one structure's constants-gradient record (computable without SymPy)."""
    return module_entry_key("c-structure-cgrad", f"structure:{structure_key}", toolchain, dtype)


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
    module_key = module_entry_key(kind, source, toolchain, dtype)
    module = load_extension(cache, module_key)
    if module is not None:
        return module
    module_name = f"{module_prefix}_{module_key[:20]}"
    failed_source = cache.root / "failed" / f"{module_name}.c"

    def builder(workdir: Path) -> Dict[str, Any]:
        from .cffi_build import BuildRequest, build_extension  # build-only: a warm process skips it

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


def _row_functions(cache: KernelCache, fields: Mapping[str, Any]) -> Optional[RowFunctions]:
    """The row functions a structure's record names, or None when its module is gone."""
    module_key, forward, backward = (fields.get(name) for name in ("module", "forward", "backward"))
    if not (_is_key(module_key) and isinstance(forward, str) and isinstance(backward, str)):
        raise DamagedRecord("its record does not name a module and two functions")
    module = load_extension(cache, module_key)
    if module is None:
        return None
    exported = exported_functions(module)
    if not (forward in exported and backward in exported):
        # meta.json is not checksummed: an edited record must not reach the C call.
        raise DamagedRecord(f"its module has no function {forward!r} or {backward!r}")
    return RowFunctions(module, forward, backward, exported[forward], exported[backward])


def _constants_grad_function(cache: KernelCache, fields: Mapping[str, Any]) -> Optional[ConstantsGradFunction]:
    """The constants-gradient function a record names, or None when its module is gone."""
    module_key, name, problem = (fields.get(f) for f in ("module", "constants_grad", "constants_grad_problem"))
    if name is None:
        if not isinstance(problem, str):
            raise DamagedRecord("its record names neither a function nor why there is none")
        return ConstantsGradFunction(None, None, problem=problem)
    if not (_is_key(module_key) and isinstance(name, str)):
        raise DamagedRecord("its record does not name a module and a function")
    module = load_extension(cache, module_key)
    if module is None:
        return None
    address = exported_functions(module).get(name)
    if address is None:
        raise DamagedRecord(f"its module has no function {name!r}")
    return ConstantsGradFunction(module, name, address)


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
    return _ensure(cache, keys, lambda key: structure_entry_key(key, toolchain, dtype), _row_functions,
                   lambda missing: _compile(cache, missing, toolchain, dtype, structures_for))


def ensure_constants_grad(cache: KernelCache, keys: Sequence[str], toolchain: Toolchain, dtype: str,
                          structures_for: Callable[[Sequence[str]], Sequence[Any]]
                          ) -> Dict[str, ConstantsGradFunction]:
    """Constants-gradient functions of the structures ``keys`` (all with constants), compiling
    the missing ones together; ``structures_for`` is only called when something is missing."""
    return _ensure(cache, keys, lambda key: constants_grad_entry_key(key, toolchain, dtype),
                   _constants_grad_function,
                   lambda missing: _compile_constants_grad(cache, missing, toolchain, dtype, structures_for))


def _ensure(cache: KernelCache, keys: Sequence[str], record_key: Callable[[str], str],
            load: Callable[[KernelCache, Mapping[str, Any]], Any],
            compile_missing: Callable[[List[str]], Dict[str, Dict[str, Any]]]) -> Dict[str, Any]:
    """Structure keys -> their records' keys -> ``cache.resolve`` -> back to structure keys."""
    structure_of = {record_key(key): key for key in keys}

    def build_missing(record_keys: List[str]) -> Dict[str, Dict[str, Any]]:
        fields = compile_missing([structure_of[k] for k in record_keys])
        return {record_key(key): value for key, value in fields.items()}

    found = cache.resolve(list(structure_of), lambda key, fields: load(cache, fields), build_missing)
    return {structure_of[key]: value for key, value in found.items()}


def _compile(cache: KernelCache, missing: List[str], toolchain: Toolchain, dtype: str,
             structures_for: Callable[[Sequence[str]], Sequence[Any]]) -> Dict[str, Dict[str, Any]]:
    """Compile the forward and backward of the structures ``missing`` (see :func:`_build`)."""
    return _build(cache, missing, toolchain, dtype, structures_for, constants_grad=False)


def _build(cache: KernelCache, missing: List[str], toolchain: Toolchain, dtype: str,
           structures_for: Callable[[Sequence[str]], Sequence[Any]], constants_grad: bool) -> Dict[str, Dict[str, Any]]:
    """Compile the structures ``missing`` (in one compiler run, or a few in parallel when there
    are many); the record fields of each, by structure key. ``constants_grad``: their
    constants-gradient functions instead of their forward and backward."""
    from ..codegen import c_source  # SymPy-based: only when compiling

    structures = list(structures_for(missing))
    cores = settings().build_jobs or usable_cores()
    n_builds = compiler_runs(len(structures), cores)
    groups = [structures[i::n_builds] for i in range(n_builds)]

    def build_group(group: Sequence[Any]) -> Dict[str, Dict[str, Any]]:
        if constants_grad:
            return build_constants_grad_group(group)
        generated = c_source.render_c_module(group, dtype, constants_grad=False)  # built lazily
        build_module(cache, "c-module", "_hsnn_rows", generated.source, generated.cdef,
                     toolchain, dtype, functions=len(group))
        module_key = module_entry_key("c-module", generated.source, toolchain, dtype)
        return {structure.key: {"kind": "c-structure", "module": module_key,
                                "forward": generated.functions[structure.key][0],
                                "backward": generated.functions[structure.key][1]}
                for structure in group}

    def build_constants_grad_group(group: Sequence[Any]) -> Dict[str, Dict[str, Any]]:
        generated = c_source.render_c_module(group, dtype, rows=False, constants_grad=True)
        module_key = None
        if generated.constants_grad:  # none when every structure's derivative failed
            build_module(cache, "c-cgrad-module", "_hsnn_cgrad", generated.source, generated.cdef,
                         toolchain, dtype, functions=len(generated.constants_grad))
            module_key = module_entry_key("c-cgrad-module", generated.source, toolchain, dtype)
        fields = {}
        for structure in group:
            name = generated.constants_grad.get(structure.key)
            fields[structure.key] = {
                "kind": "c-structure-cgrad", "module": module_key if name else None, "constants_grad": name,
                "constants_grad_problem": None if name else generated.constants_grad_problems.get(
                    structure.key, "its constants-gradient function was not made")}
        return fields

    start = time.perf_counter()
    result: Dict[str, Dict[str, Any]] = {}
    if len(groups) == 1:
        result.update(build_group(groups[0]))
    else:
        import concurrent.futures  # build-only

        with concurrent.futures.ThreadPoolExecutor(max_workers=min(len(groups), cores)) as pool:
            for fields in pool.map(build_group, groups):
                result.update(fields)
    log.info("compiled %d new %sfunction(s) in %.2f s", len(structures),
             "constants-gradient " if constants_grad else "", time.perf_counter() - start)
    return result


def _compile_constants_grad(cache: KernelCache, missing: List[str], toolchain: Toolchain, dtype: str,
                            structures_for: Callable[[Sequence[str]], Sequence[Any]]) -> Dict[str, Dict[str, Any]]:
    """The constants-gradient functions of ``missing`` (see :func:`_compile`)."""
    return _build(cache, missing, toolchain, dtype, structures_for, constants_grad=True)


def _remove_tree(path: Path) -> None:
    import shutil  # build-only (~3 ms to import)

    shutil.rmtree(path, ignore_errors=True)
