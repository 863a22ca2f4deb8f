"""Twelve processes importing one bundle into one cache at once."""
from __future__ import annotations

import json
import subprocess
import sys
import time

from heterosymnn.cache import KernelCache, export_bundle
from heterosymnn.cache.entry import verify

from bundle_helpers import files_under, fill_cache
from cache_helpers import read_log, subprocess_env

N_PROCESSES = 12

# Waits for the go file so that all imports start together, then prints the report.
IMPORTER = """
import json, os, sys, time
from heterosymnn.cache import import_bundle
while not os.path.exists(sys.argv[2]):
    time.sleep(0.002)
report = import_bundle(sys.argv[1])
print(json.dumps({"imported": report.imported, "present": report.present, "skipped": report.skipped}))
"""


def test_concurrent_imports_leave_one_good_copy_of_each_entry(cache_dir, tmp_path):
    keys = fill_cache(tmp_path / "source")
    bundle = export_bundle(tmp_path / "b.hsb", cache_dir=tmp_path / "source").path
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", IMPORTER, bundle, str(go)], env=subprocess_env(cache_dir),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(N_PROCESSES)]
    time.sleep(0.5)  # let the interpreters start, then release them together
    go.touch()
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        reports.append(json.loads(out))

    cache = KernelCache(cache_dir)
    imported = [key for report in reports for key in report["imported"]]
    assert sorted(imported) == sorted(keys.values())  # each entry published by exactly one process
    for report in reports:
        assert sorted(report["imported"] + report["present"]) == sorted(keys.values())
        assert report["skipped"] == []
    layout = cache.layout
    assert sorted(k for k, _ in layout.iter_entries()) == sorted(keys.values())
    for key in keys.values():
        assert verify(layout.entry_dir(key), key)[0] is not None
    log = read_log(cache)
    assert sorted(r["key"] for r in log if r.get("event") == "imported") == sorted(keys.values())
    assert not [r for r in log if "event" not in r]  # nothing was built
    assert files_under(layout.tmp) == [] and files_under(layout.trash) == []
