"""Exporting cache entries into one portable bundle file (see :mod:`.bundle_format`).

Only verified entries are exported: each file is read once and checked against
the SHA-256 its ``meta.json`` lists, so an entry damaged on disk, or removed or
rewritten while the export runs, is left out (and reported) rather than shipped.
The file is written beside its destination and renamed into place.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import tarfile
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from ..errors import CacheError
from .bundle_format import MANIFEST_NAME, BundleEntry, Manifest, platform_tag
from .entry import verify
from .layout import Layout, check_key, configured_base

PathLike = Union[str, "os.PathLike[str]"]

#: ``--targets`` names -> the entry kinds they cover (layer plans go with every target).
TARGET_KINDS = {"cpu": ("c-",), "cuda": ("cuda", "cubin")}


@dataclasses.dataclass(frozen=True)
class ExportReport:
    """What :func:`export_bundle` wrote.

    Attributes
    ----------
    path : str
        The bundle file.
    entries : tuple of str
        Keys of the exported entries.
    bytes : int
        Size of the bundle file.
    skipped : tuple of (str, str)
        ``(key, reason)`` of entries left out (damaged, or removed while exporting).
    """

    path: str
    entries: Tuple[str, ...]
    bytes: int
    skipped: Tuple[Tuple[str, str], ...] = ()


def export_bundle(path: PathLike, keys: Optional[Iterable[str]] = None, *,
                  cache_dir: Optional[PathLike] = None,
                  targets: Optional[Sequence[str]] = None) -> ExportReport:
    """Write cache entries into the bundle file ``path`` (replaced atomically).

    Parameters
    ----------
    path : path
        The bundle to write (``.hsb`` by convention; gzip-compressed tar).
    keys : iterable of str, optional
        Export these entries plus the modules their records name. Default: every
        valid entry of the cache.
    cache_dir : path, optional
        The cache directory; default the configured one.
    targets : sequence of str, optional
        With ``keys=None``: only entries for these targets (``"cpu"``, ``"cuda"``).

    Returns
    -------
    ExportReport

    Raises
    ------
    CacheError
        If a requested key is missing or damaged (build it first, e.g. with
        ``python -m heterosymnn.cache warm``), or the file cannot be written.
    ValueError
        For an unknown target name.
    """
    layout = Layout(Path(os.path.abspath(os.fspath(cache_dir))) if cache_dir is not None else configured_base())
    if keys is None:
        entries, skipped = _all_entries(layout, _kind_filter(targets))
    else:
        entries, skipped = _closure(layout, [check_key(k) for k in keys]), []
    target = Path(os.path.abspath(os.fspath(path)))
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{os.urandom(4).hex()}.tmp")
    written: List[BundleEntry] = []
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            for entry, folder in entries:
                problem = _add_entry(tar, entry, folder)
                if problem:
                    skipped.append((entry.key, problem))
                else:
                    written.append(entry)
            manifest = Manifest(platform_tag(), tuple(written), time.time(), _producer())
            _add_bytes(tar, MANIFEST_NAME, json.dumps(manifest.to_json(), indent=1, sort_keys=True).encode())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return ExportReport(str(target), tuple(e.key for e in written), target.stat().st_size, tuple(skipped))


def _kind_filter(targets: Optional[Sequence[str]]) -> Optional[Tuple[str, ...]]:
    if not targets:
        return None
    prefixes: List[str] = []
    for name in targets:
        family = "cuda" if name.lower().startswith(("cuda", "sm_")) else name.lower()
        if family not in TARGET_KINDS:
            raise ValueError(f"unknown target {name!r}: use cpu, cuda or an architecture such as sm_80")
        prefixes += TARGET_KINDS[family]
    return tuple(prefixes) + ("layer-plan",)


def _all_entries(layout: Layout, kinds: Optional[Tuple[str, ...]]) -> Tuple[List[Tuple[BundleEntry, Path]], List]:
    entries, skipped = [], []
    for key, folder in layout.iter_entries():
        meta, reason = verify(folder, key)
        if meta is None:
            skipped.append((key, reason))
            continue
        entry = BundleEntry.from_meta(key, meta)
        if kinds is None or entry.kind.startswith(kinds):
            entries.append((entry, folder))
    return entries, skipped


def _closure(layout: Layout, keys: Sequence[str]) -> List[Tuple[BundleEntry, Path]]:
    """The entries of ``keys`` and of every module their records name."""
    found: Dict[str, Tuple[BundleEntry, Path]] = {}
    todo = list(dict.fromkeys(keys))
    while todo:
        key = todo.pop()
        if key in found:
            continue
        folder = layout.entry_dir(key)
        meta, reason = verify(folder, key) if folder.is_dir() else (None, "it is not in the cache")
        if meta is None:
            raise CacheError(f"cannot export the cache entry {key[:16]}... from {layout.root}: {reason}. "
                             f"Fix: build it first (python -m heterosymnn.cache warm --configs FILE), "
                             f"then export again")
        entry = BundleEntry.from_meta(key, meta)
        found[key] = (entry, folder)
        if entry.depends_on():
            todo.append(entry.depends_on())
    return [found[key] for key in sorted(found)]


def _add_entry(tar: tarfile.TarFile, entry: BundleEntry, folder: Path) -> str:
    """Add an entry's files, each read once and checked against its SHA-256; a problem or ''."""
    blobs = {}
    for name, digest in sorted(entry.files.items()):
        try:
            data = folder.joinpath(*name.split("/")).read_bytes()
        except OSError as exc:
            return f"{name} could not be read ({exc.strerror or exc}); removed while exporting?"
        if hashlib.sha256(data).hexdigest() != digest:
            return f"{name} changed while exporting (its SHA-256 no longer matches)"
        blobs[name] = data
    for name, data in blobs.items():
        _add_bytes(tar, entry.member(name), data)
    return ""


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0  # no owner or time: reproducible
    tar.addfile(info, io.BytesIO(data))


def _producer() -> str:
    from .. import __version__

    return f"heterosymnn {__version__}"
