"""Instruction-set level detection and the flags each compiler family gets."""
from __future__ import annotations

import pytest

from heterosymnn.toolchains import isa

V3_LINUX = ("fpu sse sse2 pni ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt avx f16c lahf_lm abm "
            "bmi1 avx2 bmi2").split()


def test_linux_flag_names_map_to_v3():
    assert isa.level_from_features("x86_64", V3_LINUX) == "x86-64-v3"


@pytest.mark.parametrize("missing", ["fma", "movbe", "abm", "bmi2", "f16c", "avx2"])
def test_any_missing_v3_feature_drops_to_v2(missing):
    feats = [f for f in V3_LINUX if f != missing]
    assert isa.level_from_features("x86_64", feats) == "x86-64-v2"


def test_without_sse4_2_is_baseline():
    feats = [f for f in V3_LINUX if f != "sse4_2"]
    assert isa.level_from_features("x86_64", feats) == "x86-64"


def test_macos_feature_names():
    feats = ("SSE3 SSSE3 SSE4.1 SSE4.2 POPCNT CX16 LAHF AVX1.0 AVX2 BMI1 BMI2 F16C FMA "
             "MOVBE LZCNT").split()
    assert isa.level_from_features("x86_64", feats) == "x86-64-v3"


def test_other_architectures():
    assert isa.level_from_features("aarch64", ()) == "armv8-a"
    assert isa.level_from_features("arm64", ()) == "armv8-a"
    assert isa.level_from_features("riscv64", ("avx2",)) == "generic"


def test_detect_level_reads_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: " + " ".join(V3_LINUX[:-3]) + "\n\n")
    assert isa.detect_level("x86_64", "linux", str(info)) == "x86-64-v2"
    assert isa.detect_level("x86_64", "linux", str(tmp_path / "missing")) == "x86-64"


@pytest.mark.parametrize("family", ["gcc", "clang", "zig", "msvc"])
@pytest.mark.parametrize("level", isa.LEVELS)
def test_never_native_and_ends_generic(family, level):
    cands = isa.isa_candidates(family, level)
    assert cands, (family, level)
    for _, flags in cands:
        assert not any("native" in f for f in flags)
    assert cands[-1][0] in ("generic", "x86-64")


def test_family_spellings():
    assert isa.isa_candidates("gcc", "x86-64-v3")[0] == (
        "x86-64-v3", ("-march=x86-64-v3", "-mtune=generic"))
    # zig reads "x86-64-v3" as cpu "x86" minus features, so it gets its own names
    assert isa.isa_candidates("zig", "x86-64-v3")[0] == ("x86-64-v3", ("-mcpu=x86_64_v3",))
    assert isa.isa_candidates("msvc", "x86-64-v3")[0] == ("x86-64-v3", ("/arch:AVX2",))
    assert isa.isa_candidates("msvc", "x86-64-v2")[0] == ("x86-64", ())
    assert isa.isa_candidates("gcc", "armv8-a")[0] == ("armv8-a", ("-march=armv8-a",))
    # older compilers without -march=x86-64-vN get explicit feature flags next
    second = isa.isa_candidates("gcc", "x86-64-v3")[1]
    assert second[0] == "x86-64-v3" and "-mavx2" in second[1] and "-mfma" in second[1]
