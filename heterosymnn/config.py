"""Every environment variable heterosymnn reads, typed, in one place.

``settings()`` reads the environment on each call (it is cheap) so that a
variable set after import still counts; tests use :func:`override` instead of
touching ``os.environ``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Iterator, Optional

ENV_PREFIX = "HETEROSYMNN_"


@dataclasses.dataclass(frozen=True)
class Settings:
    cache_dir: Optional[str] = None
    """HETEROSYMNN_CACHE_DIR: root of the kernel cache (default: the per-user cache dir)."""
    strict: bool = False
    """HETEROSYMNN_STRICT=1: never fall back to a slower backend, raise instead."""
    cc: Optional[str] = None
    """HETEROSYMNN_CC: the C compiler to use (a path or a command name)."""
    toolchain: Optional[str] = None
    """HETEROSYMNN_TOOLCHAIN: force a toolchain family: gcc, clang, msvc or zig."""
    lock_timeout: float = 600.0
    """HETEROSYMNN_LOCK_TIMEOUT: seconds to wait for another process's build of the same key."""
    build_timeout: float = 300.0
    """HETEROSYMNN_BUILD_TIMEOUT: seconds one compiler invocation may take."""
    num_threads: int = 0
    """HETEROSYMNN_NUM_THREADS: OpenMP threads for CPU kernels (0: the OpenMP default)."""
    build_jobs: int = 0
    """HETEROSYMNN_BUILD_JOBS: most compiler runs at once for one build (0: one per usable core)."""
    cuda_compiler: Optional[str] = None
    """HETEROSYMNN_CUDA_COMPILER: force the CUDA compiler, nvrtc or nvcc (default: NVRTC, else NVCC)."""
    nvcc: Optional[str] = None
    """HETEROSYMNN_NVCC: the nvcc executable to use (default: CUDA_PATH, CUDA_HOME, then PATH)."""


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
_overrides: dict = {}


def _parse(name: str, raw: str):
    kind = _FIELDS[name].type
    if kind == "bool":
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if kind == "float":
        return float(raw)
    if kind == "int":
        return int(raw)
    return raw or None


def settings() -> Settings:
    """The settings in force: overrides, then the environment, then defaults."""
    values = {}
    for name in _FIELDS:
        if name in _overrides:
            values[name] = _overrides[name]
            continue
        raw = os.environ.get(ENV_PREFIX + name.upper())
        if raw is None or raw == "":
            continue
        try:
            values[name] = _parse(name, raw)
        except ValueError as exc:
            raise ValueError(
                f"environment variable {ENV_PREFIX + name.upper()}={raw!r} is not a valid "
                f"{_FIELDS[name].type}: {exc}"
            ) from None
    return Settings(**values)


@contextlib.contextmanager
def override(**values) -> Iterator[Settings]:
    """Temporarily replace settings (for tests); unknown names are an error."""
    unknown = set(values) - set(_FIELDS)
    if unknown:
        raise TypeError(f"unknown setting(s): {sorted(unknown)}; known: {sorted(_FIELDS)}")
    saved = dict(_overrides)
    _overrides.update(values)
    try:
        yield settings()
    finally:
        _overrides.clear()
        _overrides.update(saved)
