"""Where the cache lives on disk, and what to do when that place is unusable.

Layout below the configured directory (``HETEROSYMNN_CACHE_DIR`` or the per-user
cache directory)::

    v<CACHE_SCHEMA>/
      entries/<key[:2]>/<key>/   artifact files, then meta.json (written last)
      locks/<key[:2]>/<key>.lock one file lock per key, present while it is held
      tmp/<key>-<random>/        private build directories, renamed into entries/
      trash/<random>/            entries being deleted (renamed here first, atomically)
      builds.jsonl               one JSON line per build, and one per entry removed by
                                 clear or prune (those have an "event" field)

Everything a build writes lives under one root so that ``os.replace`` from
``tmp/`` to ``entries/`` is a same-filesystem, atomic rename.
"""
from __future__ import annotations

import atexit
import dataclasses
import errno
import os
import re
import warnings
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple, Union

from ..config import settings
from ..errors import PerformanceWarning
from .key import CACHE_SCHEMA
from ..deferred import get_logger

log = get_logger("heterosymnn.cache")

META_NAME = "meta.json"
LOG_NAME = "builds.jsonl"

# Keys become path components: accept only what cache_key() produces (lowercase
# hex), so a malformed key can never escape the cache directory.
_KEY_RE = re.compile(r"^[0-9a-f]{16,128}$")

#: errno values that, raised by a builder writing into its build directory, mean
#: the cache's filesystem is full or read-only rather than that the build failed.
DISK_ERRNOS = frozenset(
    getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EROFS") if hasattr(errno, name)
)


def check_key(key: str) -> str:
    """Return ``key`` if it is a well-formed cache key, else raise ``ValueError``."""
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise ValueError(f"not a cache key (expected lowercase hex from cache_key()): {key!r}")
    return key


def configured_base() -> Path:
    """The configured cache directory, resolved now (it follows ``override()``)."""
    raw = settings().cache_dir
    if not raw:
        import platformdirs  # not needed, nor imported, when HETEROSYMNN_CACHE_DIR is set

        raw = platformdirs.user_cache_dir("heterosymnn", appauthor=False)
    return Path(os.path.abspath(os.path.expanduser(raw)))


@dataclasses.dataclass(frozen=True)
class Layout:
    """Paths of one cache generation below ``base``."""

    base: Path

    @property
    def root(self) -> Path:
        return self.base / f"v{CACHE_SCHEMA}"

    @property
    def entries(self) -> Path:
        return self.root / "entries"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def trash(self) -> Path:
        return self.root / "trash"

    @property
    def log(self) -> Path:
        return self.root / LOG_NAME

    def entry_dir(self, key: str) -> Path:
        return self.entries / key[:2] / key

    def lock_path(self, key: str) -> Path:
        return self.locks / key[:2] / f"{key}.lock"

    def iter_entries(self) -> Iterator[Tuple[str, Path]]:
        """``(key, directory)`` of every published entry (valid or not)."""
        for shard in _listdir(self.entries):
            for name in _listdir(self.entries / shard):
                if _KEY_RE.match(name) and name.startswith(shard):
                    yield name, self.entries / shard / name

    def prepare(self) -> None:
        """Create the directories and prove a file can be written; raise ``OSError`` if not."""
        for folder in (self.entries, self.locks, self.tmp, self.trash):
            os.makedirs(folder, exist_ok=True)
        probe = self.tmp / f".probe-{os.getpid()}-{os.urandom(4).hex()}"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"ok")
        finally:
            os.close(fd)
            os.unlink(probe)


def _listdir(path: Path) -> list:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


# configured base -> private fallback base, so one process warns once and reuses it.
_FALLBACKS: Dict[str, Path] = {}


def fallback_layout(unusable: Path, error: Union[OSError, str]) -> Layout:
    """A private temporary cache standing in for an unusable directory, with a warning."""
    known = _FALLBACKS.get(str(unusable))
    if known is not None:
        return Layout(known)
    import shutil  # only for this fallback: a warm process never needs them
    import tempfile

    private = Path(tempfile.mkdtemp(prefix="heterosymnn-cache-"))
    _FALLBACKS[str(unusable)] = private
    # Linux unlinks loaded libraries fine; elsewhere leftovers are harmless temp files.
    atexit.register(shutil.rmtree, private, True)
    warnings.warn(
        f"heterosymnn cannot use the kernel cache directory {unusable} ({describe_error(error)}); "
        f"using the private temporary cache {private} instead, so kernels are rebuilt in every "
        f"process and not shared. Fix: make that directory writable (and free some space), or "
        f"set HETEROSYMNN_CACHE_DIR to a writable directory.",
        PerformanceWarning,
        stacklevel=4,
    )
    return Layout(private)


def describe_error(error: Union[OSError, str]) -> str:
    """An error in a few words for a message: ``"ENOSPC: No space left on device on /path"``."""
    if isinstance(error, OSError):
        name = errno.errorcode.get(error.errno or 0, "error")
        where = f" on {error.filename}" if error.filename else ""
        return f"{name}: {error.strerror or error}{where}"
    return str(error)


def is_disk_error(exc: BaseException) -> bool:
    """Whether ``exc`` (from a builder) means the cache's filesystem is full or read-only."""
    return isinstance(exc, OSError) and exc.errno in DISK_ERRNOS


def tmp_owner(name: str) -> Optional[str]:
    """The key a ``tmp/`` directory was created for, or ``None`` for anything else."""
    key, sep, _ = name.partition("-")
    return key if sep and _KEY_RE.match(key) else None
