"""An unusable cache directory falls back to a private temporary one, with a warning.

The tests run as root, where permission bits do not make a directory read-only,
so "read-only" and "disk full" are simulated by making the ``os`` calls that
touch the configured directory raise EROFS / ENOSPC. "A path below a regular
file" is real.
"""
from __future__ import annotations

import errno
import os
import tempfile
import warnings

import pytest

from heterosymnn.cache import KernelCache
from heterosymnn.errors import PerformanceWarning

from cache_helpers import file_builder, key_for


def _under(path, root) -> bool:
    return os.path.abspath(os.fspath(path)).startswith(str(root))


def _check_fallback(cache, configured, record, error_name):
    message = str(record[0].message)
    assert str(configured) in message and error_name in message and "HETEROSYMNN_CACHE_DIR" in message
    assert cache.is_fallback
    assert not _under(cache.root, configured)
    assert _under(cache.root, tempfile.gettempdir())


def test_path_below_a_regular_file(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    configured = blocker / "cache"
    cache = KernelCache(configured)
    assert cache.lookup(key_for("a")) is None  # reading an impossible path is just a miss
    with pytest.warns(PerformanceWarning) as record:
        entry = cache.build(key_for("a"), file_builder())
    _check_fallback(cache, configured, record, "ENOTDIR")
    assert entry.file("kernel.so").read_bytes() == b"artifact" * 64
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once, not on every build
        cache.build(key_for("b"), file_builder())
        assert cache.lookup(key_for("a")) == entry
    assert cache.stats().builds == 2


def test_read_only_directory(tmp_path, monkeypatch):
    configured = tmp_path / "ro"
    real_mkdir = os.mkdir

    def mkdir(path, *args, **kwargs):
        if _under(path, configured):
            raise OSError(errno.EROFS, "Read-only file system", os.fspath(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    cache = KernelCache(configured)
    with pytest.warns(PerformanceWarning) as record:
        cache.build(key_for("a"), file_builder())
    _check_fallback(cache, configured, record, "EROFS")


def test_disk_full_when_writing(tmp_path, monkeypatch):
    configured = tmp_path / "full"
    real_open = os.open

    def full_open(path, flags, *args, **kwargs):
        if _under(path, configured) and flags & (os.O_WRONLY | os.O_RDWR):
            raise OSError(errno.ENOSPC, "No space left on device", os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", full_open)
    cache = KernelCache(configured)
    with pytest.warns(PerformanceWarning) as record:
        cache.build(key_for("a"), file_builder())
    _check_fallback(cache, configured, record, "ENOSPC")


def test_disk_full_in_the_middle_of_a_build(tmp_path, monkeypatch):
    # The directory looks fine until the build's last write (meta.json) fails.
    configured = tmp_path / "fills-up"
    real_open = os.open

    def open_(path, flags, *args, **kwargs):
        if _under(path, configured) and os.fspath(path).endswith("meta.json") and flags & os.O_WRONLY:
            raise OSError(errno.ENOSPC, "No space left on device", os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_)
    cache = KernelCache(configured)
    calls = []
    with pytest.warns(PerformanceWarning) as record:
        entry = cache.build(key_for("a"), file_builder(calls=calls))
    _check_fallback(cache, configured, record, "ENOSPC")
    assert len(calls) == 2 and entry.file("kernel.so").exists()  # rebuilt in the fallback
    root = configured / "v1"
    assert os.listdir(root / "tmp") == [] and not (root / "entries" / key_for("a")[:2]).exists()


def test_builder_hitting_a_full_disk_falls_back_too(tmp_path):
    configured = tmp_path / "builder-full"
    cache = KernelCache(configured)
    attempts = []

    def builder(build_dir):
        attempts.append(build_dir)
        if _under(build_dir, configured):
            raise OSError(errno.ENOSPC, "No space left on device", str(build_dir / "k.o"))
        return file_builder()(build_dir)

    with pytest.warns(PerformanceWarning, match="ENOSPC"):
        cache.build(key_for("a"), builder)
    assert len(attempts) == 2 and cache.is_fallback


def test_other_builder_errors_are_not_mistaken_for_a_full_disk(tmp_path):
    cache = KernelCache(tmp_path / "c")

    def builder(build_dir):
        raise FileNotFoundError(errno.ENOENT, "no such compiler", "cc")

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(FileNotFoundError):
            cache.build(key_for("a"), builder)
    assert not cache.is_fallback
