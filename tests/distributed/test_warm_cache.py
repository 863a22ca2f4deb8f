"""WarmCache on a local cluster of two worker processes, each with its own cache ("two machines")."""
from __future__ import annotations

import os
import subprocess
import sys

import psutil
import pytest

from heterosymnn.cache import BundleError, export_bundle
from heterosymnn.distributed import WarmCache, scratch_cache_dir

from dask_helpers import PerWorkerCache, builds_in, imports_in, local_cluster, run_layer

BUNDLED = [("relu"), ("a*sin(w*num)", {"a": 1.0, "w": 3.0}), ("tanh(b*num)", {"b": 0.5})]
NOT_BUNDLED = ["atan(num)", ("c*erf(num)", {"c": 2.0})]


def _listening_addresses(pids):
    addresses = set()
    for pid in pids:
        for conn in psutil.Process(pid).net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN:
                addresses.add(conn.laddr.ip)
    return addresses


def _on_each_worker(client, fn, *args):
    return {address: client.submit(fn, *args, workers=[address], pure=False).result(timeout=120)
            for address in sorted(client.scheduler_info()["workers"])}


@pytest.mark.slow
def test_warm_workers_build_nothing_for_the_bundled_layers(worker_env, tmp_path):
    expected = run_layer(BUNDLED)  # the "login node": builds the layer, then exports its cache
    bundle = export_bundle(tmp_path / "layers.hsb")
    workers_base = tmp_path / "workers"

    with local_cluster(2) as (cluster, client):
        client.register_plugin(PerWorkerCache(str(workers_base)))
        plugin = WarmCache(tmp_path / "layers.hsb")
        client.register_plugin(plugin)
        skipped = client.run(lambda dask_worker: dask_worker.plugins[plugin.name].report.skipped)
        # (In a working tree whose code generator is being edited meanwhile, the workers' keys
        # differ from the bundle's: that shows here as "another heterosymnn version".)
        assert all(not s for s in skipped.values()), skipped
        results = _on_each_worker(client, run_layer, BUNDLED)
        builds_after_bundled = {r["cache_dir"]: builds_in(r["cache_dir"]) for r in results.values()}
        fresh = _on_each_worker(client, run_layer, NOT_BUNDLED)

        # Scheduler, nannies and workers listen on 127.0.0.1 only (and no dashboard elsewhere).
        pids = [os.getpid()] + [p.pid for p in psutil.Process().children(recursive=True)]
        assert _listening_addresses(pids) <= {"127.0.0.1"}

        # A worker that joins later is warmed too.
        cluster.scale(3)
        client.wait_for_workers(3, timeout=60)
        late = [name for name in client.run(lambda dask_worker: dask_worker.name).values()]

    caches = sorted({r["cache_dir"] for r in results.values()})
    assert len(caches) == 2 and all(c.startswith(str(workers_base)) for c in caches)
    for result in results.values():
        assert result["forward"] == expected["forward"] and result["backward"] == expected["backward"]
        assert result["constants_grad"] == expected["constants_grad"]
    for cache in caches:
        assert builds_after_bundled[cache] == [], f"a warmed worker built: {builds_after_bundled[cache]}"
        assert sorted(r["key"] for r in imports_in(cache)) == sorted(bundle.entries)
    # Control: what the bundle does not hold is built on each "machine", once.
    for result in fresh.values():
        assert [r["kind"] for r in builds_in(result["cache_dir"])] == ["c-module", "c-cgrad-module"]
    assert len(late) == 3
    joined = [workers_base / str(name) for name in late if str(workers_base / str(name)) not in caches]
    assert len(joined) == 1 and sorted(r["key"] for r in imports_in(joined[0])) == sorted(bundle.entries)


@pytest.mark.slow
def test_workers_sharing_a_cache_import_each_entry_once_and_keep_their_report(worker_env, tmp_path):
    run_layer(BUNDLED)
    export_bundle(tmp_path / "layers.hsb")
    plugin = WarmCache(tmp_path / "layers.hsb", cache_dir=tmp_path / "shared")
    with local_cluster(2) as (_, client):
        client.register_plugin(plugin)
        reports = client.run(lambda dask_worker: dask_worker.plugins[plugin.name].report)
    # Both workers share one cache directory: between them each entry is imported once.
    imported = [key for report in reports.values() for key in report.imported]
    present = [key for report in reports.values() for key in report.present]
    assert sorted(imported) == sorted(set(imported)) and len(imported) + len(present) == 2 * len(set(imported + present))
    assert all(report.directory.startswith(str(tmp_path / "shared")) for report in reports.values())


def test_a_missing_or_bad_bundle_is_an_error_on_the_client(tmp_path):
    with pytest.raises(FileNotFoundError, match="cache export"):
        WarmCache(tmp_path / "nope.hsb")
    (tmp_path / "bad.hsb").write_bytes(b"not a bundle" * 100)
    with pytest.raises(BundleError, match="not a heterosymnn cache bundle"):
        WarmCache(tmp_path / "bad.hsb")


def test_default_cache_dir_is_local_scratch():
    import dask

    with dask.config.set({"temporary-directory": "/scratch/local"}):
        assert scratch_cache_dir().startswith(os.path.abspath("/scratch/local") + os.sep + "heterosymnn-cache-")


def test_importing_heterosymnn_does_not_import_dask():
    code = ("import sys, heterosymnn, heterosymnn.cache\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed', 'torch', 'sklearn'))\n"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_dask_names_the_extra():
    # Dask is installed here; hiding it is the only way to see the message a user without it gets.
    code = ("import sys; sys.modules['distributed'] = None\n"
            "try:\n    import heterosymnn.distributed\nexcept ImportError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert "pip install 'heterosymnn[dask]'" in out
