"""Cache bundles: import entries from one portable file into a cache.

:func:`~.bundle_export.export_bundle` writes verified entries (all, or a set of
keys and the modules their records name) into a tar archive with a manifest
(see :mod:`.bundle_format`); both are re-exported here. :func:`import_bundle`
refuses a bad archive before extracting anything, extracts into a private directory inside the cache root
(the same filesystem), checks every file's SHA-256, and only then publishes
each entry through :meth:`KernelCache.build` -- the same key lock, private
directory, ``meta.json``-last seal and ``os.replace`` as a build -- so importing
into a cache that running processes use is safe, and twelve processes
importing one bundle at once leave one copy of each entry.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ..errors import CacheError
from . import buildlog
from .bundle_export import ExportReport, export_bundle
from .bundle_format import (
    MANIFEST_NAME, MAX_MANIFEST_BYTES, BundleEntry, BundleError, Manifest, check_members,
    foreign_reason, match_members, parse_manifest, platform_tag, publish_order,
)
from .store import KernelCache, default_cache

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["ExportReport", "ImportReport", "export_bundle", "import_bundle", "read_manifest"]

#: The build-log ``event`` of an entry published by an import (not a build).
IMPORTED = "imported"

_READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError, ValueError)


@dataclasses.dataclass(frozen=True)
class ImportReport:
    """What :func:`import_bundle` did, entry by entry.

    Attributes
    ----------
    bundle : str
        The bundle file.
    directory : str
        The cache root the entries went to.
    imported : tuple of str
        Keys published by this import.
    present : tuple of str
        Keys already in the cache and valid (left as they were).
    skipped : tuple of (str, str)
        ``(key, reason)`` of entries not usable here (another platform or CPU level).
    """

    bundle: str
    directory: str
    imported: Tuple[str, ...] = ()
    present: Tuple[str, ...] = ()
    skipped: Tuple[Tuple[str, str], ...] = ()

    def lines(self) -> List[str]:
        """A human-readable summary, one line per fact (used by the command line)."""
        out = [f"{self.bundle}: {len(self.imported)} imported, {len(self.present)} already present, "
               f"{len(self.skipped)} skipped, into {self.directory}"]
        out += [f"skipped {key[:16]}...: {reason}" for key, reason in self.skipped]
        return out


def import_bundle(bundle: PathLike, *, cache: Optional[KernelCache] = None) -> ImportReport:
    """Verify a bundle and publish its entries into a cache.

    Parameters
    ----------
    bundle : path
        A file written by :func:`export_bundle`.
    cache : KernelCache, optional
        Default: the cache of the configured directory (``HETEROSYMNN_CACHE_DIR``).

    Returns
    -------
    ImportReport
        Imported, already present, and skipped-with-reason (another platform,
        Python ABI, CPU level or heterosymnn version) keys.

    Raises
    ------
    BundleError
        The bundle is unreadable, truncated, not a bundle, of another format
        version, names a file outside its entries (``..``, absolute paths,
        links, devices) or fails a checksum. Nothing is published then.
    CacheError
        The cache directory cannot be written.
    """
    cache = cache if cache is not None else default_cache()
    name = os.fspath(bundle)
    layout = cache.layout
    with _open(name) as tar:
        manifest, members = _read_manifest(tar, name)  # a bad bundle is refused before the cache is touched
        try:
            layout.prepare()
        except OSError as exc:
            raise CacheError(f"cannot import {name}: the cache directory {layout.root} is not writable "
                             f"({exc}). Fix: set HETEROSYMNN_CACHE_DIR to a writable directory") from exc
        here, level, runs_on = platform_tag(), *_cpu_level()
        present, skipped, wanted = [], [], []
        for entry in manifest.entries:
            reason = foreign_reason(entry, here, level, runs_on)
            if reason:
                skipped.append((entry.key, reason))
            elif cache.lookup(entry.key) is not None:
                present.append(entry.key)
            else:
                wanted.append(entry)
        staging = Path(tempfile.mkdtemp(prefix="import-", dir=layout.tmp))
        try:
            for entry in wanted:  # every file checked before a single entry is published
                _extract(tar, members, entry, staging / entry.key, name)
            imported = _publish_all(cache, wanted, staging, present, name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return ImportReport(name, str(cache.root), tuple(imported), tuple(present), tuple(skipped))


def read_manifest(bundle: PathLike) -> Manifest:
    """Check a bundle's members and manifest without extracting anything.

    Raises
    ------
    BundleError
        As :func:`import_bundle` would, for everything but a failing checksum.
    """
    name = os.fspath(bundle)
    with _open(name) as tar:
        return _read_manifest(tar, name)[0]


def _open(name: str) -> tarfile.TarFile:
    try:
        return tarfile.open(name, "r:*")
    except FileNotFoundError:
        raise BundleError(f"no bundle at {name}") from None
    except _READ_ERRORS as exc:
        raise BundleError(f"{name} is not a heterosymnn cache bundle or is damaged ({exc})") from None


def _read_manifest(tar: tarfile.TarFile, name: str) -> Tuple[Manifest, Dict[str, tarfile.TarInfo]]:
    try:
        members = check_members(tar.getmembers(), name)
        info = members[MANIFEST_NAME]
        if info.size > MAX_MANIFEST_BYTES:
            raise BundleError(f"{name}: {MANIFEST_NAME} is {info.size} bytes, too large to be ours")
        raw = _read_member(tar, info)
    except BundleError:
        raise
    except _READ_ERRORS as exc:
        raise BundleError(f"{name} is damaged or truncated ({type(exc).__name__}: {exc}); "
                          f"nothing was imported. Copy or export it again") from None
    manifest = parse_manifest(raw, name)
    match_members(manifest, members, name)
    return manifest, members


def _read_member(tar: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
    stream = tar.extractfile(info)
    if stream is None:  # pragma: no cover - check_members admits plain files only
        raise BundleError(f"{info.name} is not a plain file")
    data = stream.read(info.size + 1)
    if len(data) != info.size:
        raise EOFError(f"{info.name} holds {len(data)} of its {info.size} bytes")
    return data


def _extract(tar: tarfile.TarFile, members: Dict[str, tarfile.TarInfo], entry: BundleEntry,
             folder: Path, name: str) -> None:
    """Write an entry's files below ``folder`` (our own paths, never the member names)."""
    for file_name, digest in sorted(entry.files.items()):
        try:
            data = _read_member(tar, members[entry.member(file_name)])
        except _READ_ERRORS as exc:
            raise BundleError(f"{name} is damaged or truncated ({type(exc).__name__}: {exc}); "
                              f"nothing was imported. Copy or export it again") from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise BundleError(f"{name} is refused: {entry.member(file_name)} fails its SHA-256 check "
                              f"(damaged or tampered with); nothing was imported")
        target = folder.joinpath(*file_name.split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def _publish_all(cache: KernelCache, wanted: Sequence[BundleEntry], staging: Path,
                 present: List[str], name: str) -> List[str]:
    imported = []
    for entry in publish_order(wanted):
        copied: List[bool] = []

        def builder(build_dir: Path, entry: BundleEntry = entry, copied: List[bool] = copied) -> Dict[str, Any]:
            for file_name in entry.files:
                target = build_dir.joinpath(*file_name.split("/"))
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(staging / entry.key / file_name, target)
            copied.append(True)
            return dict(entry.metadata)

        # record=True: an import is not a build (stats and "builds" in the log stay truthful).
        published = cache.build(entry.key, builder, record=True)
        if not copied:  # another process published it between our lookup and its lock
            present.append(entry.key)
            continue
        if published.meta.get("files") != entry.files:  # pragma: no cover - seal hashes what we checked
            raise CacheError(f"entry {entry.key[:16]}... changed while being imported from {name}")
        imported.append(entry.key)
        buildlog.append(cache.layout.log, {"event": IMPORTED, "key": entry.key, "kind": entry.kind,
                                           "pid": os.getpid(), "bundle": os.path.basename(name),
                                           "created": published.meta.get("created")})
    return imported


def _cpu_level() -> Tuple[Optional[str], Any]:
    from ..toolchains import isa  # only entries that name an instruction set need it

    try:
        return isa.host_level(), isa.runs_on
    except Exception:  # noqa: BLE001 - an unknown CPU: trust the key, as a build would
        return None, None
