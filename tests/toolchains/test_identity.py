"""Toolchain.identity(): what the cache key hashes."""
from __future__ import annotations

import dataclasses
import json
import os

import pytest

from heterosymnn.toolchains import Toolchain


@pytest.fixture
def gcc_like():
    return Toolchain(
        name="gcc", path="/usr/bin/gcc", version="12.2.0",
        compile_args=("-O3", "-march=x86-64-v3", "-mtune=generic", "-fno-math-errno", "-fopenmp"),
        link_args=("-fopenmp",), build_env=(("CC", "/usr/bin/gcc"), ("TEMP", "/tmp/a")),
        openmp=True, isa="x86-64-v3")


@pytest.mark.parametrize("change", [
    {"compile_args": ("-O2", "-march=x86-64-v3", "-mtune=generic", "-fno-math-errno", "-fopenmp")},
    {"link_args": ("-fopenmp", "-lmvec")},
    {"openmp": False},
    {"isa": "x86-64-v2"},
    {"version": "12.3.0"},
    {"path": "/opt/gcc/bin/gcc"},
    {"name": "clang"},
    {"build_env": (("CC", "/usr/bin/gcc -m32"), ("TEMP", "/tmp/a"))},
])
def test_identity_changes_with_what_shapes_the_code(gcc_like, change):
    assert dataclasses.replace(gcc_like, **change).identity() != gcc_like.identity()


def test_identity_is_stable_json(gcc_like):
    twin = dataclasses.replace(gcc_like)
    assert twin.identity() == gcc_like.identity()
    fields = json.loads(gcc_like.identity())
    assert fields["compile_args"] == list(gcc_like.compile_args)
    assert fields["version"] == "12.2.0" and fields["openmp"] is True


def test_identity_ignores_per_user_environment(gcc_like):
    # MSVC's build_env is a whole captured environment; TEMP and the like must
    # not split a cache shared between users.
    other = dataclasses.replace(gcc_like, build_env=(("CC", "/usr/bin/gcc"), ("TEMP", "/tmp/b")))
    assert other.identity() == gcc_like.identity()


def test_environ_merges_without_touching_os_environ(gcc_like):
    before = dict(os.environ)
    env = gcc_like.environ({"PATH": "/bin", "CC": "tcc"})
    assert env == {"PATH": "/bin", "CC": "/usr/bin/gcc", "TEMP": "/tmp/a"}
    assert dict(os.environ) == before


def test_cc_command_for_zig():
    tc = Toolchain("zig", "/opt/zig/zig", "0.13.0", (), (), (), False, "x86-64-v3")
    assert tc.cc_command() == ["/opt/zig/zig", "cc"]
