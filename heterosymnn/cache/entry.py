"""One published cache entry: sealing it, checking it, publishing and removing it.

An entry is a directory of artifact files plus ``meta.json``, which is written
last and lists every file with its size and SHA-256. Directories move between
``tmp/``, ``entries/`` and ``trash/`` only by ``os.replace``, so a reader sees a
whole entry or none; ``meta.json`` catches what a rename cannot (a disk filled
mid-write, a file truncated or edited later).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

from .key import CACHE_SCHEMA
from .layout import META_NAME
from .memory import MAX_ENTRIES, LruMap

#: Names the cache writes into meta.json itself; builder metadata may not use them.
RESERVED = frozenset({"schema", "key", "created", "files", "sizes", "build_seconds", "pid"})

# entry path -> stat signature of a fully hashed, good entry: hashing happens once
# per process per entry, and any later rewrite of a file changes its signature.
# Bounded for long runs: a dropped signature only means the entry is hashed again.
# Twice the entries one memory layer keeps, so that an entry held in memory keeps its
# signature even with a second cache (a fallback, another directory) in the process.
MAX_VERIFIED = 2 * MAX_ENTRIES
_verified = LruMap(MAX_VERIFIED)


@dataclasses.dataclass(frozen=True)
class Entry:
    """A verified cache entry.

    Attributes
    ----------
    key : str
        The entry's cache key.
    path : Path
        Its directory.
    meta : dict
        The parsed ``meta.json``: ``key``, ``files`` ({name: sha256}), ``sizes``,
        ``created`` (Unix time), ``build_seconds``, plus the builder's metadata.
    """

    key: str
    path: Path
    meta: Dict[str, Any] = dataclasses.field(compare=False, repr=False)

    def file(self, name: str) -> Path:
        """Path of the artifact file ``name`` (as the builder named it, ``/``-separated)."""
        if name not in self.meta.get("files", {}):
            raise KeyError(f"cache entry {self.key} has no file {name!r}; it has {sorted(self.meta['files'])}")
        return self.path.joinpath(*name.split("/"))

    @property
    def files(self) -> Dict[str, Path]:
        """Every artifact file, by name."""
        return {name: self.file(name) for name in self.meta.get("files", {})}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def seal(build_dir: Path, key: str, metadata: Optional[Mapping[str, Any]], seconds: float) -> Dict[str, Any]:
    """Checksum every file the builder wrote and write ``meta.json`` last."""
    metadata = dict(metadata or {})
    clash = RESERVED.intersection(metadata)
    if clash:
        raise ValueError(f"builder metadata may not use the reserved name(s) {sorted(clash)}")
    files: Dict[str, str] = {}
    sizes: Dict[str, int] = {}
    for path in sorted(p for p in build_dir.rglob("*") if p.is_file()):
        name = path.relative_to(build_dir).as_posix()
        if name == META_NAME:
            raise ValueError(f"a builder may not write {META_NAME}: the cache writes it")
        files[name] = sha256_file(path)
        sizes[name] = path.stat().st_size
    meta = dict(metadata, schema=CACHE_SCHEMA, key=key, created=time.time(), pid=os.getpid(),
                build_seconds=round(seconds, 6), files=files, sizes=sizes)
    try:
        text = json.dumps(meta, sort_keys=True, indent=1)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"builder metadata must be JSON-serializable: {exc}") from None
    write_file(build_dir / META_NAME, text.encode("utf-8"))
    return meta


def write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file with ``os`` calls (a short write is an error, not a truncation)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def verify(path: Path, key: str, deep: bool = True) -> Tuple[Optional[Dict[str, Any]], str]:
    """Check an entry directory: ``(meta, "")`` when usable, ``(None, reason)`` when not.

    ``deep=False`` checks ``meta.json`` and file sizes only, skipping the hashes
    (for listings, where reading every artifact would be slow).
    """
    try:
        raw = (path / META_NAME).read_bytes()
    except FileNotFoundError:
        return None, f"{META_NAME} is missing"
    except OSError as exc:
        return None, f"{META_NAME} cannot be read ({exc.strerror or exc})"
    try:
        meta = json.loads(raw.decode("utf-8"))
        files, sizes = meta["files"], meta["sizes"]
        if not isinstance(files, dict) or not isinstance(sizes, dict) or set(files) != set(sizes):
            raise ValueError("inconsistent file lists")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        return None, f"{META_NAME} is corrupt ({type(exc).__name__}: {exc})"
    if meta.get("key") != key or meta.get("schema") != CACHE_SCHEMA:
        return None, f"{META_NAME} describes another entry (key {str(meta.get('key'))[:16]}...)"
    signature, reason = _signature(path, files, sizes)
    if signature is None:
        return None, reason
    if deep and _verified.get(str(path)) != signature:
        for name in sorted(files):
            if sha256_file(path.joinpath(*name.split("/"))) != files[name]:
                return None, f"artifact {name!r} fails its SHA-256 check (corrupted)"
        _verified.put(str(path), signature)
    return meta, ""


def mark_verified(path: Path, meta: Mapping[str, Any]) -> None:
    """Record a just-published entry as hashed (``seal`` hashed its files)."""
    signature, _ = _signature(path, meta["files"], meta["sizes"])
    if signature is not None:
        _verified.put(str(path), signature)


def unchanged(entry: Entry) -> bool:
    """Whether ``entry``'s files are still the ones that were verified (stats only, no hashing).

    For entries this process already knows: a file rewritten since (another
    process repairing it, a user editing it, a disk error) changes its stat
    signature, and the entry must then be checked again before it is trusted.
    """
    signature, _ = _signature(entry.path, entry.meta["files"], entry.meta["sizes"])
    return signature is not None and _verified.get(str(entry.path)) == signature


def _signature(path: Path, files: Mapping[str, str], sizes: Mapping[str, int]) -> Tuple[Optional[tuple], str]:
    # Sizes are checked on every disk lookup (a stat is cheap); the stat tuple
    # decides whether the expensive hash must run again.
    # meta.json is part of the signature: a record (an entry with no files) rewritten at
    # the same path by another process is a new entry, and must be read again.
    try:
        st = (path / META_NAME).stat()
    except OSError:
        return None, f"{META_NAME} is missing"
    signature = [(META_NAME, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)]
    for name in sorted(files):
        try:
            st = path.joinpath(*name.split("/")).stat()
        except OSError:
            return None, f"artifact {name!r} is missing"
        if st.st_size != sizes[name]:
            return None, f"artifact {name!r} has {st.st_size} bytes, expected {sizes[name]} (truncated or rewritten)"
        signature.append((name, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(signature), ""


def move_aside(path: Path, trash: Path) -> Optional[str]:
    """Remove an entry directory safely; ``None`` on success, else why it stayed.

    The directory is first renamed into ``trash`` (atomic: readers see the whole
    entry or nothing), then deleted. On Linux, processes that loaded a library
    from it keep working. On Windows a loaded DLL cannot be moved or deleted:
    the ``PermissionError`` is reported, not raised.
    """
    _verified.pop(str(path), None)
    doomed = trash / f"{path.name}-{os.urandom(6).hex()}"
    try:
        os.makedirs(trash, exist_ok=True)
        os.replace(path, doomed)
    except FileNotFoundError:
        return None  # someone else removed it first: the outcome we wanted
    except PermissionError as exc:
        return f"{path} is in use ({exc.strerror}); a process probably has its library loaded"
    except OSError as exc:
        return f"{path} could not be moved aside ({exc.strerror or exc})"
    remove_tree(doomed)
    return None


def remove_tree(path: Path) -> bool:
    """Delete a directory tree, best effort; whether it is gone."""
    import shutil  # with bz2 and lzma ~3 ms to import: only when something is removed

    # ignore_errors: on Windows a loaded DLL inside stays, left for a later clear().
    shutil.rmtree(path, ignore_errors=True)
    return not os.path.exists(path)
