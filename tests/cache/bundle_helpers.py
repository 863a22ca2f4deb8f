"""Helpers for the bundle tests: a cache with entries, and rewriting a bundle's members."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from heterosymnn.cache import KernelCache

from cache_helpers import key_for


def fill_cache(cache_dir: Path) -> Dict[str, str]:
    """Three entries like a CPU layer's: a module, a record naming it, a plan with a nested file.

    Returns ``{role: key}``.
    """
    cache = KernelCache(cache_dir)
    keys = {"module": key_for("module"), "record": key_for("record"), "plan": key_for("plan")}

    def module(folder: Path) -> dict:
        (folder / "rows.so").write_bytes(bytes(range(256)) * 40)
        return {"kind": "c-module", "functions": 2, "isa": "generic", "toolchain": "fake-cc 1.0"}

    def record(folder: Path) -> dict:
        return {"kind": "c-structure", "module": keys["module"], "forward": "f", "backward": "b"}

    def plan(folder: Path) -> dict:
        (folder / "sub").mkdir()
        (folder / "sub" / "plan.json").write_text('{"nodes": 3}')
        return {"kind": "layer-plan"}

    cache.build(keys["module"], module)
    cache.build(keys["record"], record, record=True)
    cache.build(keys["plan"], plan, record=True)
    return keys


Member = Tuple[tarfile.TarInfo, Optional[bytes]]


def rewrite(src: Path, dst: Path, change: Callable[[List[Member]], List[Member]], mode: str = "w:gz") -> Path:
    """Copy the bundle ``src`` to ``dst`` with its members passed through ``change``."""
    with tarfile.open(src, "r:*") as tar:
        members = [(info, tar.extractfile(info).read() if info.isfile() else None) for info in tar.getmembers()]
    with tarfile.open(dst, mode) as tar:
        for info, data in change(members):
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return dst


def edit_manifest(edit: Callable[[dict], None]) -> Callable[[List[Member]], List[Member]]:
    def change(members: List[Member]) -> List[Member]:
        out = []
        for info, data in members:
            if info.name == "manifest.json":
                manifest = json.loads(data)
                edit(manifest)
                data = json.dumps(manifest).encode()
            out.append((info, data))
        return out

    return change


def add_member(info: tarfile.TarInfo, data: Optional[bytes] = None) -> Callable[[List[Member]], List[Member]]:
    return lambda members: members + [(info, data)]


def files_under(root: Path) -> List[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
