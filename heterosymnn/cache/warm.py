"""Prebuild every kernel a set of layers needs: ``python -m heterosymnn.cache warm``.

A training job, a population of workers or a cluster then starts warm: each
process finds its layers' functions in the cache and loads them without SymPy
or a compiler. GPU targets (``sm_XY``) need no GPU, only a CUDA compiler, so a
CPU-only build machine can prepare a cache for the GPU nodes.

What one (layer, mode, dtype) puts in the cache:

* every target: the layer's plan record (what a warm construction reads first);
* ``"cpu"``: what CPU_JIT loads -- the dtype's runtime driver, one record per
  structure and the modules holding their forward and backward functions, and
  (unless ``constants_grad=False``) the constants-gradient functions of the
  structures with constants, which training asks for on its first backward
  pass. They are one more compiler run per layer, with a derivation per
  constant: cheap next to a training job starting cold in every worker;
* ``"sm_XY"``: the layer's record for that architecture and its cubin (or PTX
  for an architecture newer than the compiler knows), with the CUDA compiler
  GPU_CUDA would pick (``HETEROSYMNN_CUDA_COMPILER`` forces one).

Everything goes through the normal lock + publish path, so many processes
warming the same layers at once build each entry once.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from ..errors import HeteroSymNNError

CPU = "cpu"
MODES = ("activation", "loss")
DTYPES = ("float32", "float64")


@dataclasses.dataclass(frozen=True)
class WarmedEntry:
    """One cache entry a warm run built, found, or failed to build.

    Attributes
    ----------
    key : str
        The cache key (empty for a failure that happened before a key existed).
    kind : str
        ``"layer-plan"``, ``"c-runtime"``, ``"c-structure"``, ``"c-module"``,
        ``"c-structure-cgrad"``, ``"c-cgrad-module"``, ``"cuda-layer"``,
        ``"cuda-cubin"``, ``"cuda-ptx"``; ``"layer"`` for a failure.
    target, dtype, mode : str
        ``"cpu"`` or ``"sm_XY"``; ``"float32"``/``"float64"``; ``"activation"``/``"loss"``.
    reason : str or None
        Why it failed (failures only).
    """

    key: str
    kind: str
    target: str
    dtype: str
    mode: str
    reason: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class WarmReport:
    """What :func:`warm_layers` did: entries ``built``, already ``present``, and ``failed``."""

    built: Tuple[WarmedEntry, ...]
    present: Tuple[WarmedEntry, ...]
    failed: Tuple[WarmedEntry, ...]

    @property
    def keys(self) -> Tuple[str, ...]:
        """Every key built or present (what a bundle of this warm cache must hold), in order."""
        return tuple(dict.fromkeys(e.key for e in (*self.built, *self.present)))

    @property
    def ok(self) -> bool:
        return not self.failed


LayerFile = Union[str, "os.PathLike[str]"]


def load_layer_file(path: LayerFile) -> List[List[Any]]:
    """Read a layer file: JSON, a list of layers, each a list of node configs.

    A config is a formula string or ``[formula, {constant: value}]``, as
    :class:`~heterosymnn.SymbolicJITCompiler` takes them.

    Raises
    ------
    ValueError
        The file cannot be read, is not JSON, or does not have that shape (the
        message names the file, the position and the expected form).
    """
    where = os.fspath(path)
    try:
        text = Path(where).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read the layer file {where}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"the layer file {where} is not valid JSON ({exc}); it must be a list of layers, "
                         f'each a list of configs, e.g. [["relu", ["a*sin(num)", {{"a": 2.0}}]]]') from None
    if not isinstance(data, list) or not data:
        raise ValueError(f"the layer file {where} must hold a non-empty JSON list of layers, got "
                         f"{type(data).__name__ if data != [] else 'an empty list'}")
    for index, layer in enumerate(data):
        if not isinstance(layer, list) or not layer:
            raise ValueError(f"layer {index} of {where} must be a non-empty list of node configs, got {layer!r:.80}")
        for node, config in enumerate(layer):
            if not _config_shape(config):
                raise ValueError(f"layer {index}, node {node} of {where}: a config is a formula string or "
                                 f'[formula, {{"constant": value}}], got {config!r:.80}')
    return data


def _config_shape(config: Any) -> bool:
    if isinstance(config, str):
        return True
    return (isinstance(config, list) and 1 <= len(config) <= 2 and isinstance(config[0], str)
            and (len(config) == 1 or isinstance(config[1], dict)))


def parse_targets(targets: Iterable[str]) -> Tuple[str, ...]:
    """Check targets (``"cpu"`` or ``"sm_XY"``); a bad one is a ValueError naming the forms."""
    from ..toolchains.cuda_compiler import arch_number

    checked = []
    for target in targets:
        name = str(target).strip().lower()
        if name != CPU:
            try:
                name = f"sm_{arch_number(name)}"
            except ValueError:
                raise ValueError(f"unknown target {target!r}: use cpu or a CUDA architecture such as sm_80 "
                                 f"or sm_90") from None
        checked.append(name)
    if not checked:
        raise ValueError("no target given: use cpu and/or CUDA architectures such as sm_80")
    return tuple(dict.fromkeys(checked))


def warm_layers(layers: Sequence[Sequence[Any]], *, targets: Sequence[str] = (CPU,),
                dtypes: Sequence[str] = ("float32",), modes: Sequence[str] = ("activation",),
                constants_grad: bool = True) -> WarmReport:
    """Build (or find) everything the ``layers`` need on ``targets``, in the default cache.

    Parameters
    ----------
    layers : sequence of sequence
        Each a list of node configs, as :class:`~heterosymnn.SymbolicJITCompiler` takes.
    targets : sequence of str
        ``"cpu"`` (CPU_JIT) and/or CUDA architectures ``"sm_XY"`` (GPU_CUDA; no GPU needed).
    dtypes, modes : sequence of str
        Every combination is warmed.
    constants_grad : bool
        Also build the CPU constants-gradient functions (training); the GPU
        cubins always hold them.

    Returns
    -------
    WarmReport
        A failure (bad formula, no compiler, a compiler error) is reported per
        layer, target, dtype and mode; the others are still built.

    Raises
    ------
    ValueError
        An unknown target, dtype or mode.
    """
    from . import default_cache

    targets = parse_targets(targets)
    for what, values, allowed in (("dtype", dtypes, DTYPES), ("mode", modes, MODES)):
        bad = [v for v in values if v not in allowed]
        if bad or not values:
            raise ValueError(f"unknown {what} {bad[0] if bad else '(none given)'!r}: use {' or '.join(allowed)}")
    cache = default_cache()
    run = _Run(cache, time.time())
    for index, configs in enumerate(layers):
        for mode in dict.fromkeys(modes):
            for dtype in dict.fromkeys(dtypes):
                for target in targets:
                    run.warm(index, list(configs), mode, dtype, target, constants_grad)
    return WarmReport(tuple(run.built), tuple(run.present), tuple(run.failed))


class _Run:
    """One warm run: what it saw, deduplicated by key."""

    def __init__(self, cache: Any, started: float):
        self.cache, self.started = cache, started
        self.built: List[WarmedEntry] = []
        self.present: List[WarmedEntry] = []
        self.failed: List[WarmedEntry] = []
        self._seen: Dict[str, None] = {}

    def warm(self, index: int, configs: List[Any], mode: str, dtype: str, target: str, constants_grad: bool) -> None:
        where = dict(target=target, dtype=dtype, mode=mode)
        try:
            from ..jit.frontend import LayerSource

            layer = LayerSource(configs, mode, self.cache)
            self.note(layer.plan_record_key(), "layer-plan", **where)
            if target == CPU:
                self._cpu(layer, dtype, constants_grad, where)
            else:
                self._gpu(layer, dtype, target, where)
        except (HeteroSymNNError, OSError, ValueError) as exc:
            self.failed.append(WarmedEntry("", "layer", reason=f"layer {index}: {type(exc).__name__}: {exc}", **where))

    def _cpu(self, layer: Any, dtype: str, constants_grad: bool, where: Dict[str, str]) -> None:
        from ..backends import cpu_modules
        from ..codegen.c_runtime import render_runtime
        from ..toolchains.persisted import find_toolchain_persisted

        cache, plan = self.cache, layer.plan
        toolchain = find_toolchain_persisted(cache)
        runtime = render_runtime(dtype)
        cpu_modules.build_module(cache, "c-runtime", "_hsnn_runtime", runtime.source, runtime.cdef, toolchain,
                                 dtype, functions=0)
        self.note(cpu_modules.module_entry_key("c-runtime", runtime.source, toolchain, dtype), "c-runtime", **where)
        cpu_modules.ensure_structures(cache, plan.structure_keys, toolchain, dtype, layer.structures_for)
        for key in plan.structure_keys:
            self.note_record(cpu_modules.structure_entry_key(key, toolchain, dtype), "c-structure", "c-module", where)
        with_constants = [k for k, slots in zip(plan.structure_keys, plan.structure_slots) if slots]
        if constants_grad and with_constants:
            cpu_modules.ensure_constants_grad(cache, with_constants, toolchain, dtype, layer.structures_for)
            for key in with_constants:
                self.note_record(cpu_modules.constants_grad_entry_key(key, toolchain, dtype),
                                 "c-structure-cgrad", "c-cgrad-module", where)

    def _gpu(self, layer: Any, dtype: str, arch: str, where: Dict[str, str]) -> None:
        from ..backends.cuda_modules import ensure_layer_module
        from ..toolchains.cuda_compiler import find_cuda_compiler

        compiler = find_cuda_compiler()
        module = ensure_layer_module(self.cache, layer.plan.structure_keys, dtype, compiler, arch,
                                     layer.structures_for)
        self.note(module.record_key, "cuda-layer", **where)
        self.note(module.artifact_key, "cuda-cubin" if module.format == "cubin" else "cuda-ptx", **where)

    def note_record(self, key: str, kind: str, module_kind: str, where: Dict[str, str]) -> None:
        """A record and the module it names."""
        self.note(key, kind, **where)
        entry = self.cache.lookup(key)
        module = entry.meta.get("module") if entry is not None else None
        if isinstance(module, str):
            self.note(module, module_kind, **where)

    def note(self, key: Optional[str], kind: str, **where: str) -> None:
        if not key or key in self._seen:
            return
        self._seen[key] = None
        entry = self.cache.lookup(key)
        item = WarmedEntry(key, kind, **where)
        if entry is None:  # e.g. removed by a concurrent prune right after the build
            self.failed.append(dataclasses.replace(item, reason="the entry vanished right after it was built"))
        elif entry.meta.get("pid") == os.getpid() and float(entry.meta.get("created", 0)) >= self.started:
            self.built.append(item)
        else:
            self.present.append(item)


def describe(report: WarmReport) -> Iterator[str]:
    """Lines for the command line: counts by kind and target, then each failure."""
    for label, entries in (("built", report.built), ("present", report.present)):
        counts: Dict[Tuple[str, str], int] = {}
        for e in entries:
            counts[(e.target, e.kind)] = counts.get((e.target, e.kind), 0) + 1
        text = ", ".join(f"{n} {kind} ({target})" for (target, kind), n in sorted(counts.items()))
        yield f"{label}: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}" + (f" - {text}" if text else "")
    for e in report.failed:
        yield f"FAILED: {e.target} {e.dtype} {e.mode}: {e.reason}"

