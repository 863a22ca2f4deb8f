"""Cache bundles: export, import through the normal publish path, and bad bundles refused."""
from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest

from heterosymnn import SymbolicJITCompiler
from heterosymnn.cache import BundleError, KernelCache, export_bundle, import_bundle
from heterosymnn.cache.__main__ import main as cli
from heterosymnn.cache.entry import verify
from heterosymnn.cache.layout import Layout
from heterosymnn.config import override
from heterosymnn.errors import CacheError

from bundle_helpers import add_member, edit_manifest, files_under, fill_cache, rewrite
from cache_helpers import key_for, read_log


@pytest.fixture
def bundle(cache_dir, tmp_path):
    keys = fill_cache(cache_dir)
    report = export_bundle(tmp_path / "layers.hsb")
    assert sorted(report.entries) == sorted(keys.values()) and not report.skipped
    return tmp_path / "layers.hsb"


def _entries(base):
    return sorted(key for key, _ in Layout(base).iter_entries())


def test_round_trip_publishes_verified_entries_without_building(bundle, cache_dir, tmp_path):
    target = KernelCache(tmp_path / "other")
    report = import_bundle(bundle, cache=target)

    assert sorted(report.imported) == _entries(cache_dir) and not report.present and not report.skipped
    for key in report.imported:
        entry = target.lookup(key)
        assert entry is not None
        original = KernelCache(cache_dir).lookup(key)
        assert entry.meta["files"] == original.meta["files"]  # same SHA-256 of every file
        for name, path in entry.files.items():
            assert path.read_bytes() == original.file(name).read_bytes()
        assert {k: v for k, v in entry.meta.items() if k not in ("created", "pid", "build_seconds")} == \
               {k: v for k, v in original.meta.items() if k not in ("created", "pid", "build_seconds")}
    log = read_log(target)
    assert [r["event"] for r in log] == ["imported"] * 3  # an import is no build
    assert files_under(target.layout.tmp) == []  # the staging directory is gone

    again = import_bundle(bundle, cache=target)
    assert sorted(again.present) == sorted(report.imported) and not again.imported


def test_modules_are_published_before_the_records_naming_them(bundle, tmp_path):
    target = KernelCache(tmp_path / "other")
    report = import_bundle(bundle, cache=target)
    assert report.imported.index(key_for("module")) < report.imported.index(key_for("record"))


def test_export_of_keys_brings_the_modules_their_records_name(cache_dir, tmp_path):
    keys = fill_cache(cache_dir)
    report = export_bundle(tmp_path / "one.hsb", [keys["record"]])
    assert sorted(report.entries) == sorted([keys["record"], keys["module"]])

    with pytest.raises(CacheError, match="not in the cache.*cache warm"):
        export_bundle(tmp_path / "two.hsb", [key_for("never built")])
    assert not (tmp_path / "two.hsb").exists()


def test_damaged_entries_are_left_out_of_an_export(cache_dir, tmp_path):
    keys = fill_cache(cache_dir)
    module = KernelCache(cache_dir).lookup(keys["module"])
    module.file("rows.so").write_bytes(b"\0" * module.meta["sizes"]["rows.so"])
    report = export_bundle(tmp_path / "b.hsb")
    assert keys["module"] not in report.entries
    assert [k for k, _ in report.skipped] == [keys["module"]]
    assert "SHA-256" in report.skipped[0][1]


def test_a_present_but_damaged_entry_is_replaced(bundle, tmp_path):
    target = KernelCache(tmp_path / "other")
    import_bundle(bundle, cache=target)
    entry = target.lookup(key_for("module"))
    entry.file("rows.so").write_bytes(b"\1" * entry.meta["sizes"]["rows.so"])

    with pytest.warns(Warning, match="SHA-256"):
        report = import_bundle(bundle, cache=KernelCache(tmp_path / "other"))
    assert report.imported == (key_for("module"),)
    assert verify(entry.path, entry.key)[0] is not None


def test_entries_for_another_platform_cpu_or_version_are_skipped_with_a_reason(bundle, tmp_path):
    def foreign(manifest):
        for row in manifest["entries"]:
            if row["key"] == key_for("plan"):
                row["platform"]["machine"] = "riscv128"
            if row["key"] == key_for("module"):
                row["metadata"]["isa"] = "x86-64-v9"
            if row["key"] == key_for("record"):
                # An older heterosymnn also spelled the ABI tag differently: the version is the
                # reason to give, since exporting again fixes both.
                row["platform"]["generator"] = "0" * 64
                row["platform"]["python_abi"] = "cpython-311/cpython-311-x86_64-linux-gnu"

    changed = rewrite(bundle, tmp_path / "foreign.hsb", edit_manifest(foreign))
    target = KernelCache(tmp_path / "other")
    report = import_bundle(changed, cache=target)
    reasons = dict(report.skipped)
    assert "riscv128" in reasons[key_for("plan")]
    assert "x86-64-v9" in reasons[key_for("module")] and "cannot run" in reasons[key_for("module")]
    assert "another heterosymnn version" in reasons[key_for("record")]
    assert report.imported == () and _entries(target.layout.base) == []


def _tampered(bundle, tmp_path):
    def flip(members):
        out = []
        for info, data in members:
            if data is not None and info.name.endswith("rows.so"):
                data = bytes([data[0] ^ 1]) + data[1:]  # same size, other bytes
            out.append((info, data))
        return out

    return rewrite(bundle, tmp_path / "tampered.hsb", flip)


def _member(name, kind=tarfile.REGTYPE, link=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


BAD = {
    "not a tar": lambda b, t: t.joinpath("x.hsb").write_bytes(b"PK\3\4 not a tar at all" * 10) and t / "x.hsb",
    "truncated": lambda b, t: t.joinpath("x.hsb").write_bytes(b.read_bytes()[: b.stat().st_size // 2]) and t / "x.hsb",
    "wrong format": lambda b, t: rewrite(b, t / "x.hsb", edit_manifest(lambda m: m.update(format="zip-of-things"))),
    "newer version": lambda b, t: rewrite(b, t / "x.hsb", edit_manifest(lambda m: m.update(version=99))),
    "tampered checksum": _tampered,
    "parent traversal": lambda b, t: rewrite(b, t / "x.hsb", add_member(_member("../../evil.txt"), b"owned")),
    "nested traversal": lambda b, t: rewrite(b, t / "x.hsb", add_member(
        _member(f"entries/{key_for('module')}/../../../evil.txt"), b"owned")),
    "absolute path": lambda b, t: rewrite(b, t / "x.hsb", add_member(_member(str(t / "evil.txt")), b"owned")),
    "symlink": lambda b, t: rewrite(b, t / "x.hsb", add_member(
        _member(f"entries/{key_for('module')}/link", tarfile.SYMTYPE, "/etc/passwd"))),
    "device": lambda b, t: rewrite(b, t / "x.hsb", add_member(_member("entries/dev", tarfile.CHRTYPE))),
    "unlisted file": lambda b, t: rewrite(b, t / "x.hsb", add_member(
        _member(f"entries/{key_for('module')}/extra.so"), b"extra")),
    "missing file": lambda b, t: rewrite(b, t / "x.hsb", lambda ms: [m for m in ms if not m[0].name.endswith(".so")]),
}

MESSAGES = {
    "not a tar": "not a heterosymnn cache bundle", "truncated": "damaged or truncated",
    "wrong format": "not a heterosymnn cache bundle", "newer version": "format version 99",
    "tampered checksum": "fails its SHA-256 check", "parent traversal": r"'\.\.' \(path traversal\)",
    "nested traversal": r"'\.\.' \(path traversal\)", "absolute path": "absolute path",
    "symlink": "link, device", "device": "link, device", "unlisted file": "not listed",
    "missing file": "missing",
}


@pytest.mark.parametrize("problem", sorted(BAD))
def test_bad_bundles_are_refused_and_nothing_is_written(problem, bundle, tmp_path):
    bad = BAD[problem](bundle, tmp_path)
    target = KernelCache(tmp_path / "other")
    before = files_under(tmp_path)

    with pytest.raises(BundleError, match=MESSAGES[problem]):
        import_bundle(bad, cache=target)
    assert _entries(target.layout.base) == []
    assert files_under(target.layout.base) == []  # not even a staging directory is left
    assert files_under(tmp_path) == before  # nothing written anywhere else (no evil.txt)
    assert not any(p.name == "evil.txt" for p in tmp_path.parent.rglob("evil.txt"))


def test_command_line_export_and_import(cache_dir, tmp_path, capsys):
    fill_cache(cache_dir)
    out = tmp_path / "cli.hsb"
    assert cli(["export", str(out)]) == 0
    assert "wrote 3 entries" in capsys.readouterr().out

    other = tmp_path / "other"
    assert cli(["--cache-dir", str(other), "import", str(out)]) == 0
    assert "3 imported, 0 already present, 0 skipped" in capsys.readouterr().out
    assert cli(["--cache-dir", str(other), "import", "--json", str(out)]) == 0
    assert len(json.loads(capsys.readouterr().out)["present"]) == 3

    bad = _tampered(out, tmp_path)
    assert cli(["--cache-dir", str(tmp_path / "third"), "import", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "SHA-256" in err and "nothing was imported" in err


def test_command_line_export_of_a_layer_file_builds_then_exports_only_its_entries(cache_dir, tmp_path, capsys):
    fill_cache(cache_dir)  # unrelated entries that must stay out of the bundle
    layers = tmp_path / "layers.json"
    layers.write_text(json.dumps([["relu", ["a*sin(w*num)", {"a": 1.0, "w": 3.0}]], ["tanh(num)"]]))
    out = tmp_path / "layers.hsb"
    assert cli(["export", str(out), "--configs", str(layers)]) == 0
    exported = json.loads(tarfile.open(out).extractfile("manifest.json").read())["entries"]
    kinds = {row["kind"] for row in exported}
    assert {"c-module", "c-structure", "c-cgrad-module", "c-structure-cgrad", "c-runtime", "layer-plan"} <= kinds
    assert not {key_for("module"), key_for("plan")} & {row["key"] for row in exported}

    # A second cache warmed by the bundle builds nothing for those layers.
    other = tmp_path / "other"
    assert cli(["--cache-dir", str(other), "import", str(out)]) == 0
    with override(cache_dir=str(other)):
        for configs in (["relu", ("a*sin(w*num)", {"a": 1.0, "w": 3.0})], ["tanh(num)"]):
            comp = SymbolicJITCompiler(configs, "CPU_JIT", strict=True)
            z = np.linspace(-2, 2, len(configs) * 4, dtype=np.float32).reshape(len(configs), 4)
            assert np.isfinite(comp.forward_kernel(z)).all()
            if comp.constant_names:  # training's constants gradient was exported too
                comp.backward_kernel(z, np.ones_like(z), constants_grad=np.zeros(len(comp.constant_names)))
    builds = [r for r in read_log(KernelCache(other)) if "event" not in r]
    assert builds == []


def test_bad_layer_file_is_a_clear_error(cache_dir, tmp_path, capsys):
    layers = tmp_path / "layers.json"
    layers.write_text(json.dumps([["relu", 3]]))
    assert cli(["export", str(tmp_path / "x.hsb"), "--configs", str(layers)]) == 1
    assert "layer 0, node 1" in capsys.readouterr().err
    layers.write_text(json.dumps([["relu", "factorial(num)"]]))
    assert cli(["export", str(tmp_path / "x.hsb"), "--configs", str(layers), "--targets", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "cannot export what" in err and "factorial" in err
    assert not (tmp_path / "x.hsb").exists()
