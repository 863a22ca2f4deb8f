"""A digest of the code that generates kernels: part of every cache key.

A cached kernel is only right for the generator that made it. A hand-bumped
version number was forgotten four times while the derivative code changed, so
the cache served gradients of an older heterosymnn. Instead, every key hashes
the source files of the generator itself: the symbolic front end (parser,
named-formula table, derivatives, slots), the printers and templates, and the
modules that build and load artifacts. Any change to them, released or edited
in place, builds afresh; unchanged code keeps its cache.

Computed once per process by reading and hashing about 40 small files (well
under a millisecond per file, no SymPy import), so warm starts stay cheap.
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Iterator, Tuple

from ..deferred import get_logger

log = get_logger(__name__)

_PACKAGE = Path(__file__).resolve().parent.parent

#: What shapes a kernel, relative to the package: whole folders, or single modules.
GENERATOR_PARTS: Tuple[str, ...] = (
    "symbolic",                   # parsing, named formulas, slots, derivatives, structure keys
    "codegen",                    # printers, lowering, C/CUDA templates, the runtime driver
    "backends/cffi_build.py",     # how a C module is compiled
    "backends/_cffi_child.py",
    "backends/cpu_modules.py",    # which functions a module holds, its compile arguments
    "backends/cuda.py",           # how the CUDA source is compiled and launched
    "backends/cuda_tiles.py",     # ...and the order in which its partial sums are added
    "backends/cuda_modules.py",   # how a cubin is built and recorded
)


#: What shapes a toolchain record (detectors, probes, flags): see toolchains/persisted.py.
DETECTOR_PARTS: Tuple[str, ...] = ("toolchains",)


def _files(package: Path, parts: Tuple[str, ...]) -> Iterator[Path]:
    for part in parts:
        path = package / part
        if path.is_dir():
            yield from sorted(path.glob("*.py"))
        elif path.is_file():
            yield path


def generator_digest(package: Path = _PACKAGE, parts: Tuple[str, ...] = GENERATOR_PARTS) -> str:
    """SHA-256 over the generator's source files (their package-relative names and bytes).

    Parameters
    ----------
    package : Path
        The ``heterosymnn`` package folder (tests pass a copy).
    parts : tuple of str
        Folders and modules to hash, relative to ``package``.

    Returns
    -------
    str
        64 hex digits. Line endings are normalised, so a checkout with CRLF endings
        has the digest of the same code with LF endings.
    """
    digest = hashlib.sha256(b"heterosymnn-generator/1\0")
    count = 0
    for path in _files(package, parts):
        digest.update(path.relative_to(package).as_posix().encode("utf-8") + b"\0")
        digest.update(path.read_bytes().replace(b"\r\n", b"\n") + b"\0")
        count += 1
    if count == 0:
        # A sourceless install (only .pyc files): its version is all that can tell builds apart.
        from .. import __version__

        log.warning("heterosymnn's source files were not found under %s: cache keys use the "
                    "version %s only, so locally changed code may reuse old kernels", package, __version__)
        digest.update(f"version:{__version__}".encode("utf-8"))
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def current_generator_digest() -> str:
    """:func:`generator_digest` of the running package, computed once per process."""
    return generator_digest()


@functools.lru_cache(maxsize=1)
def current_detector_digest() -> str:
    """The same digest over the toolchain detectors: a changed detector detects again."""
    return generator_digest(parts=DETECTOR_PARTS)
