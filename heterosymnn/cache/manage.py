"""Inspecting and trimming the cache: info, list, clear, prune.

These work on the configured directory as it is (they never fall back to a
temporary one, which would report on the wrong place) and take each entry's
lock before removing it, so a build in progress is never half-deleted and an
entry being published is never removed half-way.

Each removal is written to the build log, under the entry's lock and before
the entry goes, as ``{"event": "removed", "key": ..., "by": "clear"|"prune"}``.
Builds of a key are logged under the same lock, so the log orders every build
and removal of one key as they happened: two builds of a key with no removal
between them are a cache bug, which is what the stress tests check.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from ..errors import CacheError
from . import buildlog, locks
from .entry import move_aside, remove_tree, verify
from .key import CACHE_SCHEMA
from .layout import Layout, configured_base, tmp_owner

PathLike = Union[str, "os.PathLike[str]"]

#: A build directory is stale when its key's lock is free (its builder died: a
#: live build holds the lock until its directory is gone). The age is a margin
#: on top, and the only test for stray files that name no key.
STALE_AGE_S = 60.0

#: The ``event`` of a build-log line recording an entry removed by clear or prune.
REMOVED = "removed"

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4}


def parse_size(text: str) -> int:
    """``"500M"`` -> 524288000. Units K, M, G, T are binary (1024); ``B``/``iB`` optional.

    Raises
    ------
    ValueError
        For anything else, with the accepted forms in the message.
    """
    match = _SIZE_RE.match(str(text))
    if not match:
        raise ValueError(f"invalid size {text!r}: use a number of bytes, optionally with K, M, G or T "
                         f"(binary multiples), e.g. 1024, 500M, 2G")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def _layout(base: Optional[PathLike]) -> Layout:
    return Layout(Path(os.path.abspath(os.fspath(base))) if base is not None else configured_base())


def _tree_size(path: Path) -> int:
    total = 0
    for folder, _, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


def _is_held(lock_path: Path) -> bool:
    try:
        with locks.try_hold(lock_path):
            return False
    except CacheError:
        return True
    except OSError:
        return False


def _temp_dirs(layout: Layout) -> List[Tuple[Path, bool]]:
    """``(path, stale)`` for each build directory: stale when old and its key's lock is free."""
    result = []
    now = time.time()
    for name in sorted(os.listdir(layout.tmp)) if layout.tmp.is_dir() else []:
        path = layout.tmp / name
        try:
            old = now - path.stat().st_mtime > STALE_AGE_S
        except OSError:
            continue
        key = tmp_owner(name)
        result.append((path, old and not (key is not None and _is_held(layout.lock_path(key)))))
    return result


def cache_info(base: Optional[PathLike] = None) -> Dict[str, Any]:
    """Summary of the cache: directory, sizes, counts, leftovers.

    Returns
    -------
    dict
        ``directory``, ``exists``, ``schema``, ``size_bytes`` (everything under
        the directory), ``entries``, ``entries_bytes``, ``builds_logged``,
        ``removals_logged`` (entries removed by clear and prune), ``lock_files``
        (one outlives its build only if the builder was killed), ``locks_held``
        (builds in progress), ``temp_dirs``,
        ``stale_temp_dirs`` (left by killed builds), ``trash_dirs`` and
        ``other_schemas`` (older cache generations that could be deleted).
    """
    layout = _layout(base)
    entries = list(layout.iter_entries())
    lock_files = sorted(layout.locks.glob("*/*.lock")) if layout.locks.is_dir() else []
    temps = _temp_dirs(layout)
    others = sorted(p.name for p in layout.base.glob("v*") if p.is_dir() and p != layout.root) \
        if layout.base.is_dir() else []
    records = buildlog.read(layout.log)
    return {
        "directory": str(layout.root),
        "exists": layout.root.is_dir(),
        "schema": CACHE_SCHEMA,
        "size_bytes": _tree_size(layout.root),
        "entries": len(entries),
        "entries_bytes": sum(_tree_size(path) for _, path in entries),
        "builds_logged": sum(1 for record in records if "event" not in record),
        "removals_logged": sum(1 for record in records if record.get("event") == REMOVED),
        "lock_files": len(lock_files),
        "locks_held": sum(_is_held(p) for p in lock_files),
        "temp_dirs": len(temps),
        "stale_temp_dirs": sum(stale for _, stale in temps),
        "trash_dirs": len(os.listdir(layout.trash)) if layout.trash.is_dir() else 0,
        "other_schemas": others,
    }


def list_entries(base: Optional[PathLike] = None) -> List[Dict[str, Any]]:
    """One dict per entry, least recently used first.

    Keys: ``key``, ``path``, ``size_bytes``, ``created`` and ``last_used`` (Unix
    times), ``status`` (``"ok"`` or why the entry will be rebuilt; sizes are
    checked, hashes are not) and ``metadata`` (the builder's metadata).
    """
    layout = _layout(base)
    rows = []
    for key, path in layout.iter_entries():
        try:
            used = path.stat().st_mtime
        except OSError:
            continue  # removed meanwhile
        meta, reason = verify(path, key, deep=False)
        reserved = {"schema", "key", "created", "files", "sizes", "pid"}
        rows.append({
            "key": key,
            "path": str(path),
            "size_bytes": _tree_size(path),
            "created": (meta or {}).get("created", used),
            "last_used": used,
            "status": "ok" if meta is not None else reason,
            "metadata": {k: v for k, v in (meta or {}).items() if k not in reserved},
        })
    rows.sort(key=lambda row: row["last_used"])
    return rows


def _remove_entry(layout: Layout, key: str, path: Path, lock_timeout: float, by: str) -> Optional[str]:
    try:
        with locks.hold(layout.lock_path(key), lock_timeout, "removing a cache entry"):
            if not path.is_dir():
                return None  # removed meanwhile (by another clear or prune)
            # Logged first: whoever finds the entry gone finds its removal logged.
            buildlog.append(layout.log, {"event": REMOVED, "key": key, "by": by, "pid": os.getpid(),
                                         "time": time.time()})
            return move_aside(path, layout.trash)
    except CacheError:
        return f"{path} skipped: a build of this key is in progress (its lock is held)"
    except OSError as exc:
        return f"{path} skipped: {exc}"


def clear(base: Optional[PathLike] = None, lock_timeout: float = 10.0) -> Dict[str, Any]:
    """Remove every entry, and build directories left by killed builds.

    Returns
    -------
    dict
        ``removed`` (entries), ``temp_removed``, ``locks_removed`` (lock files
        left by killed processes), ``skipped`` (one note per entry left in
        place: locked by a running build, or a DLL loaded on Windows). The
        build log is kept.
    """
    layout = _layout(base)
    removed, skipped = 0, []
    for key, path in list(layout.iter_entries()):
        note = _remove_entry(layout, key, path, lock_timeout, "clear")
        if note:
            skipped.append(note)
        else:
            removed += 1
    temp_removed = 0
    for path, stale in _temp_dirs(layout):
        if stale:
            if path.is_dir():
                temp_removed += remove_tree(path)
            else:
                try:
                    path.unlink()
                    temp_removed += 1
                except OSError:
                    pass
    for name in os.listdir(layout.trash) if layout.trash.is_dir() else []:
        if not remove_tree(layout.trash / name):
            skipped.append(f"{layout.trash / name} is still in use; delete it later")
    return {"directory": str(layout.root), "removed": removed, "temp_removed": temp_removed,
            "locks_removed": _remove_free_lock_files(layout), "skipped": skipped}


def _remove_free_lock_files(layout: Layout) -> int:
    """Delete the lock files nobody holds (left by killed processes); how many went."""
    if os.name == "nt":
        return 0  # filelock deletes them there when it can: an open file cannot be deleted
    removed = 0
    for path in sorted(layout.locks.glob("*/*.lock")) if layout.locks.is_dir() else []:
        try:
            with locks.try_hold(path):  # the last release unlinks the file
                pass
        except (CacheError, OSError):
            continue  # held: its build is running, and its lock file goes when the build ends
        removed += not path.exists()
    return removed


def prune(max_bytes: int, base: Optional[PathLike] = None, lock_timeout: float = 10.0) -> Dict[str, Any]:
    """Remove least-recently-used entries until they total at most ``max_bytes``.

    Last use is an entry's directory mtime, refreshed by the first lookup of
    each process. Returns ``removed``, ``freed_bytes``, ``remaining_bytes``,
    ``max_bytes`` and ``skipped`` notes.
    """
    if max_bytes < 0:
        raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
    layout = _layout(base)
    rows = list_entries(base=layout.base)
    total = sum(row["size_bytes"] for row in rows)
    removed, freed, skipped = 0, 0, []
    for row in rows:
        if total <= max_bytes:
            break
        note = _remove_entry(layout, row["key"], Path(row["path"]), lock_timeout, "prune")
        if note:
            skipped.append(note)
            continue
        removed += 1
        freed += row["size_bytes"]
        total -= row["size_bytes"]
    return {"directory": str(layout.root), "removed": removed, "freed_bytes": freed,
            "remaining_bytes": total, "max_bytes": max_bytes, "skipped": skipped}
