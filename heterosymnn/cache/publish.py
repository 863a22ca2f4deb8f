"""Making one entry: a private build directory, the builder, the seal, the rename.

Runs with the key's lock held (see ``KernelCache.build``). Every ``OSError``
raised by the cache's own file operations means the cache directory cannot be
used (full, read-only, vanished) and is reported as :class:`Unusable`, which
makes the caller retry in a fallback directory; the build directory is removed
whatever happens.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from ..errors import CacheError
from .entry import Entry, move_aside, remove_tree, seal, verify
from .layout import Layout, is_disk_error

#: ``builder(build_dir)`` writes the artifact files into ``build_dir`` and returns
#: JSON-serializable metadata (``toolchain`` and ``functions`` feed the build log).
Builder = Callable[[Path], Optional[Mapping[str, Any]]]


class Unusable(Exception):
    """The cache directory failed mid-build (disk full, read-only...): fall back."""

    def __init__(self, error: OSError, base: Optional[Path] = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.base = base  # the cache directory that failed


def make(layout: Layout, key: str, builder: Builder) -> Tuple[Entry, float]:
    """Build ``key`` in a private directory and publish it; the entry and the builder's seconds."""
    _remove_leftovers(layout, key)
    try:
        os.makedirs(layout.tmp, exist_ok=True)
        # Named after the key so that clear() can tell, by its lock, whether a build still runs.
        import tempfile  # building only: a warm process never needs it

        build_dir = Path(tempfile.mkdtemp(prefix=f"{key}-", dir=layout.tmp))
    except OSError as exc:
        raise Unusable(exc) from exc
    try:
        start = time.perf_counter()
        try:
            metadata = builder(build_dir)
        except OSError as exc:
            if is_disk_error(exc) and not isinstance(exc, CacheError):
                raise Unusable(exc) from exc
            raise
        seconds = time.perf_counter() - start
        try:
            meta = seal(build_dir, key, metadata, seconds)
        except OSError as exc:
            raise Unusable(exc) from exc
        final, meta = _rename(layout, build_dir, key, meta)
    finally:
        if build_dir.exists():
            remove_tree(build_dir)
    return Entry(key, final, meta), seconds


def _remove_leftovers(layout: Layout, key: str) -> None:
    # Build directories of this key left by builders that were killed (or lost
    # their disk) mid-build. We hold the key's lock, so none of them is still in
    # use by a live builder; without this, every killed build would leak its files.
    try:
        names = os.listdir(layout.tmp)
    except OSError:
        return
    for name in names:
        if name.startswith(f"{key}-"):
            remove_tree(layout.tmp / name)


def _rename(layout: Layout, build_dir: Path, key: str, meta: Dict[str, Any]) -> Tuple[Path, Dict[str, Any]]:
    final = layout.entry_dir(key)
    try:
        os.makedirs(final.parent, exist_ok=True)
    except OSError as exc:
        raise Unusable(exc) from exc
    for attempt in range(3):
        try:
            os.replace(build_dir, final)
            return final, meta
        except OSError as exc:
            if not final.is_dir():
                if attempt == 2:
                    raise Unusable(exc) from exc
                time.sleep(0.05 * (attempt + 1))  # Windows: a scanner briefly holding a file
                continue
        theirs, _ = verify(final, key)
        if theirs is not None:
            return final, theirs  # a writer outside our lock published first: use theirs
        note = move_aside(final, layout.trash)  # a broken leftover: replace it
        if note:
            raise CacheError(f"cannot replace the broken kernel cache entry: {note}")
    raise CacheError(f"could not publish the kernel cache entry {final}")


def function_count(value: Any) -> Optional[int]:
    """The builder's ``functions`` metadata as a count (a number, or a list of names)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, (list, tuple, dict)):
        return len(value)
    return None
