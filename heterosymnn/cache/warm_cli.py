"""``python -m heterosymnn.cache warm --configs FILE [--targets ...] [--dtype ...] [--mode ...]``.

Exit status: 0 when everything was built or already there, 1 when something
failed (each failure is named on stderr), 2 for a usage error (a bad file,
target, dtype or mode).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any, List

from .warm import CPU, DTYPES, MODES, describe, load_layer_file, parse_targets, warm_layers


def _names(text: str) -> List[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def add_warm_parser(sub: Any) -> None:
    """The ``warm`` subcommand's arguments."""
    cmd = sub.add_parser(
        "warm", help="prebuild every kernel a layer file needs (CPU and/or GPU architectures, no GPU needed)",
        description="Build every function the layers of FILE need, for each target, dtype and mode, "
                    "so that training jobs start warm. A GPU target needs a CUDA compiler (NVRTC or nvcc), "
                    "not a GPU.")
    cmd.add_argument("--configs", required=True, metavar="FILE",
                     help='JSON: a list of layers, each a list of node configs, e.g. '
                          '[["relu", ["a*sin(num)", {"a": 2.0}]]]')
    cmd.add_argument("--targets", default=CPU, metavar="LIST",
                     help="comma-separated: cpu and/or CUDA architectures, e.g. cpu,sm_80,sm_90 (default: cpu)")
    cmd.add_argument("--dtype", default="float32", metavar="LIST",
                     help=f"comma-separated: {', '.join(DTYPES)} (default: float32)")
    cmd.add_argument("--mode", default="activation", metavar="LIST",
                     help=f"comma-separated: {', '.join(MODES)} (default: activation)")
    cmd.add_argument("--no-constants-grad", action="store_true",
                     help="skip the CPU constants-gradient functions (inference only)")
    cmd.add_argument("--json", action="store_true", help="print JSON")


def run_warm_command(args: argparse.Namespace) -> int:
    """Run ``warm``; returns the exit status."""
    try:
        layers = load_layer_file(args.configs)
        targets = parse_targets(_names(args.targets))
        dtypes, modes = _names(args.dtype), _names(args.mode)
        for what, values, allowed in (("dtype", dtypes, DTYPES), ("mode", modes, MODES)):
            bad = [v for v in values if v not in allowed] or ([] if values else ["(none)"])
            if bad:
                raise ValueError(f"unknown {what} {bad[0]!r}: use {' or '.join(allowed)}")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = warm_layers(layers, targets=targets, dtypes=dtypes, modes=modes,
                         constants_grad=not args.no_constants_grad)
    if args.json:
        print(json.dumps({name: [dataclasses.asdict(e) for e in getattr(report, name)]
                          for name in ("built", "present", "failed")}, indent=2))
    else:
        for line in describe(report):
            print(line, file=sys.stderr if line.startswith("FAILED") else sys.stdout)
    if report.failed:
        print(f"error: {len(report.failed)} warm step(s) failed: "
              + "; ".join(f"{e.target}/{e.dtype}/{e.mode}" for e in report.failed), file=sys.stderr)
        return 1
    return 0
