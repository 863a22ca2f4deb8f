"""``python -m heterosymnn.doctor [--json]``: what this machine can do, and why not.

:func:`collect` runs every probe (platform, packages, toolchains, CUDA, cache,
environment, then a live build-and-run check of each backend) and returns a
JSON-ready dict; :func:`render` turns it into ``Key : value`` text;
:func:`main` is the command line. Each probe is isolated: one that raises
leaves an entry in ``errors`` and the others still report.
"""
from __future__ import annotations

import argparse
import json
import sys
import traceback
from typing import Any, Callable, Dict, List, Optional, Sequence

from . import live, probes
from .render import render

__all__ = ["SECTIONS", "collect", "compiled_backend_ok", "main", "render"]

#: (top-level key, module, function name); looked up at call time so a probe can be replaced.
SECTIONS = (
    ("platform", probes, "probe_platform"),
    ("packages", probes, "probe_packages"),
    ("toolchains", probes, "probe_toolchains"),
    ("cuda", probes, "probe_cuda"),
    ("cache", probes, "probe_cache"),
    ("env", probes, "probe_env"),
    ("backends", live, "probe_backends"),
)
COMPILED = ("CPU_JIT", "GPU_CUDA")


def _run_probe(name: str, probe: Callable[..., Any], errors: List[Dict[str, str]], *args: Any) -> Any:
    try:
        return probe(*args)
    except Exception as exc:  # isolation is the point: record, and let the next probe run
        frames = traceback.format_exception(type(exc), exc, exc.__traceback__)
        errors.append({"probe": name, "error": f"{type(exc).__name__}: {exc}",
                       "traceback": "".join(frames[-3:]).rstrip()})
        return {"error": f"{type(exc).__name__}: {exc}"}


def collect() -> Dict[str, Any]:
    """Run every probe.

    Returns
    -------
    dict
        Keys ``platform``, ``packages``, ``toolchains``, ``cuda``, ``cache``,
        ``env``, ``backends`` and ``errors`` (a list of ``{probe, error,
        traceback}``). A probe that raised has ``{"error": ...}`` as its section.
    """
    info: Dict[str, Any] = {}
    errors: List[Dict[str, str]] = []
    for key, module, function in SECTIONS:
        args = (info.get("cuda"),) if key == "backends" else ()
        info[key] = _run_probe(key, getattr(module, function), errors, *args)
    info["errors"] = errors
    return info


def compiled_backend_ok(info: Dict[str, Any]) -> bool:
    """Whether CPU_JIT or GPU_CUDA passed its live check."""
    backends = info.get("backends")
    return isinstance(backends, dict) and any(
        isinstance(backends.get(name), dict) and backends[name].get("ok") for name in COMPILED)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line; exit status 0 when at least one compiled backend works, else 1."""
    parser = argparse.ArgumentParser(
        prog="python -m heterosymnn.doctor",
        description="Report what heterosymnn finds on this machine and check every backend live.")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    info = collect()
    if args.json:
        sys.stdout.write(json.dumps(info, indent=2, default=str) + "\n")
    else:
        sys.stdout.write(render(info))
    return 0 if compiled_backend_ok(info) else 1
