"""``python -m heterosymnn.cache export|import``, and the keys a layer file needs.

``export --configs FILE`` exports only what the layers of a JSON layer file
need (a list of layers, each a list of node configs as
:class:`~heterosymnn.SymbolicJITCompiler` accepts them: ``"relu"`` or
``["a*sin(w*num)", {"a": 1.0, "w": 3.0}]``), building what is missing first
with :func:`heterosymnn.cache.warm.warm_layers`, as ``cache warm`` does.
"""
from __future__ import annotations

import argparse
import json
from typing import Any, List, Optional, Sequence, Set

from ..errors import CacheError
from .bundle import export_bundle, import_bundle


def keys_for_layer_file(path: Any, *, targets: Sequence[str] = ("cpu",), dtypes: Sequence[str] = ("float32",),
                        modes: Sequence[str] = ("activation",)) -> Set[str]:
    """Cache keys the layers of a layer file need, built first where missing.

    The same building as ``python -m heterosymnn.cache warm`` (constants'
    gradient included: training needs it), which also reports each key.

    Raises
    ------
    ValueError
        A bad layer file, target, dtype or mode.
    CacheError
        Something could not be built (each failure is named): the bundle would
        miss it.
    """
    from .warm import load_layer_file, parse_targets, warm_layers

    report = warm_layers(load_layer_file(path), targets=parse_targets(targets), dtypes=tuple(dtypes),
                         modes=tuple(modes))
    if report.failed:
        raise CacheError(f"cannot export what {path} needs: " + "; ".join(
            f"{e.target}/{e.dtype}/{e.mode}: {e.reason}" for e in report.failed))
    return set(report.keys)


def _names(values: Optional[Sequence[str]]) -> List[str]:
    # "--targets cpu sm_80" and "--targets cpu,sm_80" (the form `cache warm` takes) alike.
    return [part.strip() for value in values or () for part in value.split(",") if part.strip()]


def run_bundle_command(args: argparse.Namespace) -> int:
    """``export`` or ``import``; the exit status (errors propagate to the CLI's handler)."""
    if args.command == "import":
        report = import_bundle(args.bundle)
        if args.json:
            print(json.dumps({"bundle": report.bundle, "directory": report.directory,
                              "imported": report.imported, "present": report.present,
                              "skipped": [{"key": k, "reason": r} for k, r in report.skipped]}, indent=2))
        else:
            print("\n".join(report.lines()))
        return 0
    keys: Optional[Set[str]] = None
    targets = _names(args.targets)
    if args.configs:
        keys = keys_for_layer_file(args.configs, targets=targets or ("cpu",), dtypes=_names(args.dtype),
                                   modes=_names(args.mode))
    result = export_bundle(args.bundle, keys, targets=None if keys is not None else targets)
    if args.json:
        print(json.dumps({"path": result.path, "entries": result.entries, "bytes": result.bytes,
                          "skipped": [{"key": k, "reason": r} for k, r in result.skipped]}, indent=2))
    else:
        print(f"wrote {len(result.entries)} entries ({result.bytes} bytes) to {result.path}")
        for key, reason in result.skipped:
            print(f"skipped {key[:16]}...: {reason}")
    return 0
