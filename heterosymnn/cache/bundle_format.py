"""The cache bundle format: a tar archive with a JSON manifest, and how to check one.

A bundle is an uncompressed or gzip-compressed tar file::

    manifest.json                   format name and version, platform tag, entries
    entries/<key>/<file>            every artifact file of every entry

The manifest lists, per entry, its key, kind, platform tag, the builder's
metadata (what ``meta.json`` holds beside the cache's own fields) and the
SHA-256 and size of every file. ``meta.json`` itself is not shipped: the
importer publishes each entry through :meth:`KernelCache.build`, which seals it
anew, so a bundle can never plant a ``meta.json`` the cache did not write.

Everything here is pure checking: :func:`check_members` refuses a bad archive
(absolute names, ``..``, links, devices, unknown or missing files) before a
single byte is extracted.
"""
from __future__ import annotations

import dataclasses
import json
import platform
import re
import tarfile
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..errors import CacheError
from .entry import RESERVED
from ..codegen.fingerprint import current_generator_digest
from .key import CACHE_SCHEMA, python_abi_tag
from .layout import META_NAME, check_key

FORMAT_NAME = "heterosymnn-cache-bundle"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
ENTRIES_DIR = "entries"

#: A manifest larger than this is not ours (it lists metadata, never artifacts).
MAX_MANIFEST_BYTES = 64 * 1024 * 1024

# One path component of an artifact name: no separators, no drive letters, not "." or "..".
_COMPONENT_RE = re.compile(r"^[A-Za-z0-9_.+=@-]{1,200}$")


class BundleError(CacheError):
    """A bundle that cannot be imported: unreadable, truncated, foreign or tampered with."""


def platform_tag() -> Dict[str, str]:
    """What an entry needs to be used here: operating system, machine, Python ABI, and the
    digest of the code generator (every key hashes it: entries of another heterosymnn
    version would be imported only to be never asked for)."""
    return {"system": platform.system(), "machine": platform.machine(), "python_abi": python_abi_tag(),
            "generator": current_generator_digest()}


@dataclasses.dataclass(frozen=True)
class BundleEntry:
    """One entry as the manifest describes it.

    Attributes
    ----------
    key : str
        Its cache key.
    kind : str
        The builder's ``kind`` (``"c-module"``, ``"c-structure"``, ``"layer-plan"``...).
    platform : dict
        :func:`platform_tag` of the machine that built it.
    metadata : dict
        The builder's metadata (the cache's own fields of ``meta.json`` removed).
    files : dict
        ``{name: sha256}`` of every artifact file (``/``-separated names).
    sizes : dict
        ``{name: bytes}``.
    """

    key: str
    kind: str
    platform: Dict[str, str] = dataclasses.field(compare=False)
    metadata: Dict[str, Any] = dataclasses.field(compare=False, repr=False)
    files: Dict[str, str] = dataclasses.field(compare=False, repr=False)
    sizes: Dict[str, int] = dataclasses.field(compare=False, repr=False)

    @classmethod
    def from_meta(cls, key: str, meta: Mapping[str, Any]) -> "BundleEntry":
        """The manifest row of a verified cache entry's ``meta.json``."""
        metadata = {name: value for name, value in meta.items() if name not in RESERVED}
        return cls(key, str(meta.get("kind") or "unknown"), platform_tag(), metadata,
                   dict(meta["files"]), dict(meta["sizes"]))

    def to_json(self) -> Dict[str, Any]:
        return {"key": self.key, "kind": self.kind, "platform": self.platform, "metadata": self.metadata,
                "files": self.files, "sizes": self.sizes}

    def member(self, name: str) -> str:
        """The archive member holding the artifact file ``name``."""
        return f"{ENTRIES_DIR}/{self.key}/{name}"

    def depends_on(self) -> Optional[str]:
        """The key of the module a record names (published before the record), if any."""
        module = self.metadata.get("module")
        return module if isinstance(module, str) else None


@dataclasses.dataclass(frozen=True)
class Manifest:
    """A bundle's manifest: format, where it was made, and its entries."""

    platform: Dict[str, str]
    entries: Tuple[BundleEntry, ...]
    created: float = 0.0
    producer: str = ""

    def to_json(self) -> Dict[str, Any]:
        return {"format": FORMAT_NAME, "version": FORMAT_VERSION, "cache_schema": CACHE_SCHEMA,
                "created": self.created, "producer": self.producer, "platform": self.platform,
                "entries": [entry.to_json() for entry in self.entries]}


def parse_manifest(raw: bytes, bundle: str) -> Manifest:
    """Check and parse ``manifest.json``; :class:`BundleError` naming what is wrong."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"{bundle}: {MANIFEST_NAME} is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise BundleError(f"{bundle} is not a heterosymnn cache bundle ({MANIFEST_NAME} does not name "
                          f"the format {FORMAT_NAME!r}); make one with `python -m heterosymnn.cache export`")
    if data.get("version") != FORMAT_VERSION:
        raise BundleError(f"{bundle} has bundle format version {data.get('version')!r}; this heterosymnn "
                          f"reads version {FORMAT_VERSION}. Export it again with this version of heterosymnn")
    if data.get("cache_schema") != CACHE_SCHEMA:
        raise BundleError(f"{bundle} holds cache schema {data.get('cache_schema')!r} entries; this "
                          f"heterosymnn uses schema {CACHE_SCHEMA}. Export it again with this version")
    try:
        entries = tuple(_entry(row) for row in data["entries"])
        tag = {str(k): str(v) for k, v in dict(data["platform"]).items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{bundle}: {MANIFEST_NAME} is malformed ({type(exc).__name__}: {exc})") from None
    keys = [entry.key for entry in entries]
    if len(set(keys)) != len(keys):
        raise BundleError(f"{bundle}: {MANIFEST_NAME} lists an entry twice")
    return Manifest(tag, entries, float(data.get("created") or 0.0), str(data.get("producer") or ""))


def _entry(row: Mapping[str, Any]) -> BundleEntry:
    key = check_key(row["key"])
    files, sizes, metadata = row["files"], row["sizes"], row["metadata"]
    if not (isinstance(files, dict) and isinstance(sizes, dict) and isinstance(metadata, dict)):
        raise TypeError(f"entry {key[:16]}...: files, sizes and metadata must be objects")
    if set(files) != set(sizes):
        raise ValueError(f"entry {key[:16]}...: files and sizes list different names")
    for name, digest in files.items():
        check_artifact_name(name)
        if not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
            raise ValueError(f"entry {key[:16]}...: {name!r} has no SHA-256")
        if not isinstance(sizes[name], int) or isinstance(sizes[name], bool) or sizes[name] < 0:
            raise ValueError(f"entry {key[:16]}...: {name!r} has no size")
    clash = RESERVED.intersection(metadata)
    if clash:
        raise ValueError(f"entry {key[:16]}...: metadata uses the cache's own field(s) {sorted(clash)}")
    tag = {str(k): str(v) for k, v in dict(row["platform"]).items()}
    return BundleEntry(key, str(row["kind"]), tag, dict(metadata), dict(files), dict(sizes))


def check_artifact_name(name: Any) -> str:
    """An artifact file name as ``meta.json`` lists it; ``ValueError`` for anything that could escape."""
    if not isinstance(name, str) or not name or name.startswith("/") or "\\" in name:
        raise ValueError(f"unsafe file name {name!r}")
    parts = name.split("/")
    if any(part in ("", ".", "..") or not _COMPONENT_RE.match(part) for part in parts) or name == META_NAME:
        raise ValueError(f"unsafe file name {name!r}")
    return name


def check_members(members: Sequence[tarfile.TarInfo], bundle: str) -> Dict[str, tarfile.TarInfo]:
    """Every member by name, after refusing anything that is not a plain, safe file.

    Raises
    ------
    BundleError
        For a link, device, FIFO or directory with a strange name, an absolute
        name, a name with ``..``, a member outside ``entries/<key>/`` other than
        the manifest, or a name present twice. Nothing has been extracted then.
    """
    files: Dict[str, tarfile.TarInfo] = {}
    for member in members:
        name = member.name
        problem = _member_problem(member)
        if problem:
            raise BundleError(f"{bundle} is refused: member {name!r} {problem}; nothing was imported")
        if member.isdir():
            continue
        if name in files:
            raise BundleError(f"{bundle} is refused: member {name!r} appears twice; nothing was imported")
        files[name] = member
    if MANIFEST_NAME not in files:
        raise BundleError(f"{bundle} is not a heterosymnn cache bundle: it has no {MANIFEST_NAME}")
    return files


def _member_problem(member: tarfile.TarInfo) -> str:
    name = member.name
    if not (member.isfile() or member.isdir()):
        return "is a link, device or other special file (a bundle holds plain files only)"
    if name.startswith("/") or "\\" in name or re.match(r"^[A-Za-z]:", name):
        return "has an absolute path"
    parts = name.rstrip("/").split("/") if member.isdir() else name.split("/")
    if ".." in parts:
        return "contains '..' (path traversal)"
    if member.isdir():
        return "" if parts in ([ENTRIES_DIR],) or (len(parts) >= 2 and parts[0] == ENTRIES_DIR) else \
            "is a directory outside entries/"
    if name == MANIFEST_NAME:
        return ""
    if len(parts) < 3 or parts[0] != ENTRIES_DIR:
        return "is outside entries/<key>/"
    try:
        check_key(parts[1])
        check_artifact_name("/".join(parts[2:]))
    except ValueError as exc:
        return f"has an unsafe name ({exc})"
    return ""


def match_members(manifest: Manifest, files: Mapping[str, tarfile.TarInfo], bundle: str) -> None:
    """The archive holds exactly the files the manifest lists, with the listed sizes."""
    expected = {MANIFEST_NAME}
    for entry in manifest.entries:
        for name, size in entry.sizes.items():
            member = entry.member(name)
            expected.add(member)
            info = files.get(member)
            if info is None:
                raise BundleError(f"{bundle} is damaged or truncated: {member} is listed in "
                                  f"{MANIFEST_NAME} but missing; nothing was imported")
            if info.size != size:
                raise BundleError(f"{bundle} is damaged: {member} has {info.size} bytes, the manifest "
                                  f"says {size}; nothing was imported")
    extra = sorted(set(files) - expected)
    if extra:
        raise BundleError(f"{bundle} is refused: {extra[0]} is not listed in {MANIFEST_NAME}; "
                          f"nothing was imported")


def foreign_reason(entry: BundleEntry, here: Mapping[str, str], host_level: Optional[str],
                   runs_on: Any) -> Optional[str]:
    """Why ``entry`` cannot be used on this machine, or ``None``."""
    # The generator before the Python ABI: another heterosymnn version may also spell the ABI
    # tag differently, and "export it again" is what the user can do about either.
    for field in ("system", "machine", "generator", "python_abi"):
        if entry.platform.get(field) == here.get(field):
            continue
        if field == "generator":
            return ("made by another heterosymnn version (its code generator differs from this one's); "
                    "export the bundle again with the heterosymnn the workers run")
        return f"built for {field} {entry.platform.get(field)!r}, this machine has {here.get(field)!r}"
    level = entry.metadata.get("isa")
    if isinstance(level, str) and host_level is not None and not runs_on(level, host_level):
        return f"built for the instruction set {level}, which this CPU ({host_level}) cannot run"
    return None


def publish_order(entries: Sequence[BundleEntry]) -> List[BundleEntry]:
    """Modules before the records that name them, so a reader never meets a dangling record."""
    return sorted(entries, key=lambda entry: (entry.depends_on() is not None, entry.key))

