"""Remember the detected toolchain on disk, so a warm process skips the probes.

Detection compiles and runs small probe programs (OpenMP, libmvec), about
0.2 s; a worker process that only loads cached kernels must not pay that.
The result is stored in the cache root under a fingerprint of everything
detection depends on (the settings, ``CC``, ``PATH``, the interpreter, the
host CPU's instruction-set level, the detectors' own code, and the size and
modification time of each candidate compiler), so installing or upgrading a
compiler, changing the environment or heterosymnn's detectors, or reading the
cache on another CPU (a shared home, a copied cache) detects again. A record whose level this CPU cannot run is never used,
whatever its fingerprint: its flags would build code that dies of SIGILL.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Dict, Optional

from ..codegen.fingerprint import current_detector_digest
from ..config import settings
from . import isa
from .toolchain import Toolchain

FILE_NAME = "toolchain.json"
_CANDIDATES = ("cc", "gcc", "clang", "cl")
KEPT_RECORDS = 8


def _stat(command: Optional[str]) -> Any:
    if not command:
        return None
    path = shutil.which(command.split()[0]) if command.split() else None
    if path is None:
        return [command, None]
    try:
        info = os.stat(path)
    except OSError:
        return [command, None]
    return [command, os.path.realpath(path), info.st_size, info.st_mtime_ns]


def fingerprint() -> str:
    current = settings()
    facts = {
        "settings": [current.cc, current.toolchain],
        "CC": os.environ.get("CC"),
        "PATH": os.environ.get("PATH"),
        "python": sys.executable,
        "isa": isa.host_level(),
        "detectors": current_detector_digest(),
        "compilers": [_stat(c) for c in (current.cc, os.environ.get("CC"), *_CANDIDATES)],
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


def find_toolchain_persisted(cache: Any) -> Toolchain:
    """Like :func:`find_toolchain`, but answered from the cache root when nothing changed."""
    path = Path(cache.root) / FILE_NAME
    key = fingerprint()
    stored = _read(path)
    if key in stored:
        try:
            toolchain = _from_json(stored[key])
        except (TypeError, KeyError, ValueError, AttributeError):
            pass  # a damaged record: detecting again costs a fraction of a second, and rewrites it
        else:
            if isa.runs_on(toolchain.isa, isa.host_level()):
                return toolchain
    from .select import find_toolchain  # the detectors: imported only when detecting

    toolchain = find_toolchain()
    # Keep a few other answers: machines of two CPU levels sharing one home would
    # otherwise each detect again every time the other one had written the file.
    others = [(k, v) for k, v in stored.items() if k != key][-(KEPT_RECORDS - 1):]
    _write(path, {**dict(others), key: dataclasses.asdict(toolchain)})
    return toolchain


def _from_json(data: Dict[str, Any]) -> Toolchain:
    fields = dict(data)
    for name in ("compile_args", "link_args"):
        if not isinstance(fields[name], list) or not all(isinstance(arg, str) for arg in fields[name]):
            raise TypeError(f"{name} must be a list of strings")
        fields[name] = tuple(fields[name])
    fields["build_env"] = tuple(tuple(pair) for pair in fields["build_env"])
    return Toolchain(**fields)


def _read(path: Path) -> Dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(path: Path, data: Dict[str, Any]) -> None:
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(json.dumps(data), encoding="utf-8")
        os.replace(temporary, path)
    except OSError:  # a read-only cache only means detecting again next time
        try:
            temporary.unlink()
        except OSError:
            pass
