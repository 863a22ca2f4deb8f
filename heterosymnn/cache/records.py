"""Records: small cache entries that point at artifacts, resolved or built in one call.

The unit a backend asks for (one function of one structure, for one toolchain
and dtype) is not the unit it builds (a module holding many functions). A
*record* bridges the two: a metadata-only entry under the function's key that
names the artifact holding it. :func:`resolve` is the one call a backend makes:
it finds the usable records, and for the missing ones takes their locks, looks
again (another process may have built them meanwhile), has the backend build
them, and publishes their records -- all in the calling thread, so the
re-entrant locks are always taken and released by the thread that holds them.

Records are not builds: they are neither counted in ``stats().builds`` nor
logged in ``builds.jsonl``, where they would hide the real compiles.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence, TypeVar

if TYPE_CHECKING:
    from .store import KernelCache

T = TypeVar("T")

#: ``load(key, fields)``: the usable object a record's fields name, or None when what they
#: name is gone (it is then built again); raises :class:`DamagedRecord` for nonsense fields.
RecordLoader = Callable[[str, Mapping[str, Any]], Optional[T]]
#: ``build_missing(keys)``: builds what the records of ``keys`` will name; returns their fields.
RecordBuilder = Callable[[List[str]], Mapping[str, Mapping[str, Any]]]


class DamagedRecord(Exception):
    """A record whose fields cannot be right (an edited or foreign ``meta.json``)."""


def resolve(cache: "KernelCache", keys: Sequence[str], load: RecordLoader,
            build_missing: RecordBuilder) -> Dict[str, T]:
    """The loaded object of every key's record, building (once, under locks) what is missing.

    Parameters
    ----------
    cache : KernelCache
        Where the records and the artifacts they name live.
    keys : sequence of str
        Record keys (duplicates are resolved once).
    load, build_missing : callable
        See :data:`RecordLoader` and :data:`RecordBuilder`. ``build_missing`` is only
        called with keys still missing after their locks were taken.

    Returns
    -------
    dict
        ``{key: load(key, fields)}`` for every key.
    """
    found = _find(cache, keys, load)
    missing = [key for key in dict.fromkeys(keys) if key not in found]
    if not missing:
        return found
    with cache.locked(missing):
        found.update(_find(cache, missing, load))
        missing = [key for key in missing if key not in found]
        if missing:
            built = build_missing(missing)
            for key in missing:
                found[key] = _publish(cache, key, dict(built[key]), load)
    return found


def _find(cache: "KernelCache", keys: Sequence[str], load: RecordLoader) -> Dict[str, Any]:
    found: Dict[str, Any] = {}
    for key in keys:
        entry = cache.lookup(key)
        if entry is None:
            continue
        try:
            loaded = load(key, entry.meta)
        except DamagedRecord as exc:
            cache.invalidate(entry, str(exc))
            continue
        if loaded is not None:
            found[key] = loaded
    return found


def _publish(cache: "KernelCache", key: str, fields: Dict[str, Any], load: RecordLoader) -> Any:
    entry = cache.build(key, lambda folder: fields, record=True)
    if any(entry.meta.get(name) != value for name, value in fields.items()):
        # The record named an artifact that is gone (pruned): kept, it would send every
        # later layer using this key to the compiler again.
        cache.discard(entry)
        cache.build(key, lambda folder: fields, record=True)
    loaded = load(key, fields)
    if loaded is None:
        raise DamagedRecord(f"the artifact named by the new record {key[:16]}... is not usable")
    return loaded
