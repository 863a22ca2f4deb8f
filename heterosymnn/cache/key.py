"""The one function that turns everything a build depends on into a cache key.

Every input that can change the bytes of a built artifact, or whether it can be
loaded here, goes into the key; nothing else does. That includes the code that
generates kernels (see :mod:`heterosymnn.codegen.fingerprint`): a record that
points at a module, or a layer plan, is only right for the generator that made
it. Keeping this in a single function is what makes "same key, same artifact"
auditable.
"""
from __future__ import annotations

import hashlib
import importlib.machinery
import json
import platform
import sys
import types
from typing import Dict, Mapping, Sequence

# One version number, owned by the code generator: bumping it retires old entries.
from ..codegen.dtypes import CODEGEN_VERSION
# ...and the digest of the generator's own code, which retires them without anyone remembering to.
from ..codegen.fingerprint import current_generator_digest

#: Bump when the on-disk layout of the cache changes: a new ``v<N>`` folder is used.
CACHE_SCHEMA = 1

_EMPTY: Mapping[str, str] = types.MappingProxyType({})


def python_abi_tag() -> str:
    """Python's ABI as it matters for loading an extension module.

    ``cache_tag`` names the interpreter (``cpython-311``); the first extension-module
    suffix the import system tries (``.cpython-311-x86_64-linux-gnu.so``,
    ``.cp311-win_amd64.pyd``) adds the debug/free-threaded flavour and platform.
    Read from ``importlib.machinery`` rather than ``sysconfig``, whose configuration
    data takes ~1.5 ms to load on every warm start.
    """
    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    return f"{sys.implementation.cache_tag}/{suffixes[0] if suffixes else ''}"


def cache_key(
    kind: str,
    *,
    source: str,
    toolchain_identity: str,
    flags: Sequence[str] = (),
    extra: Mapping[str, str] = _EMPTY,
) -> str:
    """SHA-256 hex digest naming one build artifact.

    Parameters
    ----------
    kind : str
        What is being built (``"cpu"``, ``"cuda"``...); artifacts of different
        kinds never share a key even for the same source.
    source : str
        The complete generated source text.
    toolchain_identity : str
        The compiler's identity (resolved path and probed version).
    flags : sequence of str
        Every compiler and linker flag, in order (order can change the result).
    extra : mapping of str to str
        Any other input of the build, e.g. ``{"openmp": "libgomp", "dtype": "float32"}``.

    Returns
    -------
    str
        64 lowercase hex digits, identical across processes, runs and machines
        with the same inputs (never derived from Python's ``hash()``).

    Raises
    ------
    TypeError
        If a flag or an ``extra`` item is not a string: silently converting
        would let ``1`` and ``"1"`` collide.
    """
    payload = {
        "kind": _text("kind", kind),
        "source": _text("source", source),
        "toolchain": _text("toolchain_identity", toolchain_identity),
        "flags": [_text("flag", f) for f in _sequence(flags)],
        "extra": _mapping(extra),
        "python_abi": python_abi_tag(),
        "system": platform.system(),
        "machine": platform.machine(),
        "codegen_version": CODEGEN_VERSION,
        "generator": current_generator_digest(),
        "cache_schema": CACHE_SCHEMA,
    }
    # sort_keys + fixed separators + ASCII-only: one byte string per payload.
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def _text(what: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"cache_key: {what} must be a str, got {type(value).__name__} {value!r}")
    return value


def _sequence(flags: Sequence[str]) -> Sequence[str]:
    # A bare string is a Sequence[str] too; hashing its characters as flags would
    # hide a caller bug behind a key that merely looks right.
    if isinstance(flags, str):
        raise TypeError(f"cache_key: flags must be a sequence of str, not a str ({flags!r})")
    return flags


def _mapping(extra: Mapping[str, str]) -> Dict[str, str]:
    return {_text("extra key", k): _text(f"extra[{k!r}]", v) for k, v in extra.items()}
