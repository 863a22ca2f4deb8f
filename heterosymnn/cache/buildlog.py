"""The JSON-lines build log: one line per artifact built, by any process.

Lines are appended with a single ``os.write`` on an ``O_APPEND`` descriptor:
the kernel then places each whole line at the current end of file, so lines
from concurrent writers never interleave (POSIX guarantees this for local
files; lines stay far below any filesystem's atomic-append size).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping

from ..deferred import get_logger

log = get_logger("heterosymnn.cache")


def append(path: Path, record: Mapping[str, Any]) -> None:
    """Append ``record`` as one JSON line; a failure is logged, never raised.

    The log is diagnostics: losing a line (disk full) must not fail a build
    whose artifact is already published.
    """
    line = (json.dumps(record, sort_keys=True, separators=(",", ":"), default=str) + "\n").encode("utf-8")
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o644)
        try:
            if _ends_torn(fd):
                # A writer killed (or a disk filled) mid-line left no newline: start
                # a fresh line, or this record would be glued to the broken one and lost.
                line = b"\n" + line
            written = os.write(fd, line)
            if written < len(line):  # a full disk took part of the line; the next append ends it
                raise OSError(f"only {written} of {len(line)} bytes were written")
        finally:
            os.close(fd)
    except OSError as exc:
        log.warning("could not append to the build log %s: %s", path, exc)


def _ends_torn(fd: int) -> bool:
    size = os.fstat(fd).st_size
    if not size:
        return False
    os.lseek(fd, size - 1, os.SEEK_SET)  # O_APPEND still sends the write to the end
    return os.read(fd, 1) != b"\n"


def read(path: Path) -> List[Dict[str, Any]]:
    """Every well-formed record of the log (a torn last line is skipped)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records
