"""The cache key: every input counts, nothing else does, and it is stable."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heterosymnn.cache import key as key_module
from heterosymnn.cache import cache_key

from cache_helpers import WORKER, REPO

BASE = dict(kind="cpu", source="double f(double x);", toolchain_identity="gcc 13.2 /usr/bin/gcc",
            flags=["-O3", "-fopenmp"], extra={"openmp": "libgomp", "dtype": "float32"})


def test_key_is_sha256_hex_and_deterministic():
    first = cache_key(**BASE)
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    assert cache_key(**BASE) == first


@pytest.mark.parametrize("change", [
    {"kind": "cuda"},
    {"source": "double f(double x); "},
    {"toolchain_identity": "gcc 13.3 /usr/bin/gcc"},
    {"flags": ["-O3"]},
    {"flags": ["-fopenmp", "-O3"]},  # order of flags matters to a compiler
    {"flags": ["-O3", "-fopenmp", "-march=native"]},
    {"extra": {"openmp": "none", "dtype": "float32"}},
    {"extra": {"openmp": "libgomp", "dtype": "float64"}},
    {"extra": {"openmp": "libgomp"}},
    {"extra": {"openmp": "libgomp", "dtype": "float32", "arch": "sm_80"}},
])
def test_any_explicit_input_changes_the_key(change):
    assert cache_key(**{**BASE, **change}) != cache_key(**BASE)


def test_flag_boundaries_do_not_collide():
    # ["-O3 -g"] and ["-O3", "-g"] must differ even though their joined text is equal.
    assert cache_key(**{**BASE, "flags": ["-O3 -g"]}) != cache_key(**{**BASE, "flags": ["-O3", "-g"]})


def test_extra_order_does_not_matter():
    reordered = {"dtype": "float32", "openmp": "libgomp"}
    assert cache_key(**{**BASE, "extra": reordered}) == cache_key(**BASE)


@pytest.mark.parametrize("target, attribute, value", [
    ("platform", "machine", lambda: "riscv128"),
    ("platform", "system", lambda: "Plan9"),
    ("key_module", "python_abi_tag", lambda: "cpython-399/other"),
])
def test_platform_and_abi_change_the_key(monkeypatch, target, attribute, value):
    before = cache_key(**BASE)
    module = key_module.platform if target == "platform" else key_module
    monkeypatch.setattr(module, attribute, value)
    assert cache_key(**BASE) != before


@pytest.mark.parametrize("name", ["CODEGEN_VERSION", "CACHE_SCHEMA"])
def test_version_numbers_change_the_key(monkeypatch, name):
    before = cache_key(**BASE)
    monkeypatch.setattr(key_module, name, getattr(key_module, name) + 1)
    assert cache_key(**BASE) != before


def test_abi_tag_names_the_interpreter():
    assert sys.implementation.cache_tag in key_module.python_abi_tag()


def test_abi_tag_carries_the_extension_suffix_sysconfig_gives():
    """Read from importlib.machinery (cheap at a warm start), it still names the ABI flavour and
    platform that sysconfig's EXT_SUFFIX does: an extension built here loads only where that matches."""
    import sysconfig

    assert key_module.python_abi_tag().endswith("/" + sysconfig.get_config_var("EXT_SUFFIX"))


@pytest.mark.parametrize("bad", [
    {"flags": "-O3"},
    {"flags": ["-O3", 3]},
    {"extra": {"threads": 4}},
    {"source": b"bytes"},
])
def test_non_string_inputs_are_rejected(bad):
    with pytest.raises(TypeError):
        cache_key(**{**BASE, **bad})


def test_key_is_stable_across_processes():
    # Python's hash() is salted per process; a key derived from it would differ here.
    out = subprocess.run([sys.executable, str(WORKER), "key"], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=str(REPO), PYTHONHASHSEED="12345"), timeout=60)
    assert out.stdout.strip() == cache_key(**BASE)


@settings(max_examples=60, deadline=None)
@given(st.text(), st.text())
def test_distinct_sources_give_distinct_keys(a, b):
    same = cache_key(**{**BASE, "source": a}) == cache_key(**{**BASE, "source": b})
    assert same == (a == b)
