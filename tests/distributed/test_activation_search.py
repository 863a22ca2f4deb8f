"""The activation-search example on local clusters: identical tables, killed workers retried."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

import activation_search as example
from dask_helpers import local_cluster


def test_population_is_seeded_named_formulas_plus_grammar_formulas():
    first, again, other = example.population(10, 0), example.population(10, 0), example.population(10, 1)
    assert first == again and first != other
    assert [c.name for c in first[:5]] == list(example.NAMED[:5])
    drawn = [c.config for c in first[5:]]
    assert len({text for text, _ in drawn}) == 5
    assert all(set(constants) <= {"a", "b"} for _, constants in drawn)


@pytest.mark.slow
def test_same_table_on_one_and_two_workers(worker_env, capsys):
    args = ["--population", "4", "--steps", "40", "--seed", "3"]
    # Once as a user runs it (a script: its functions travel to the workers by value)...
    one = subprocess.run([sys.executable, example.__file__, *args, "--workers", "1"],
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    # ...once imported (its functions travel by reference).
    assert example.main(args + ["--workers", "2"]) == 0
    two = capsys.readouterr()
    assert one.stdout == two.out  # the ranked table, byte for byte
    rows = one.stdout.splitlines()[1:]
    assert len(rows) == 4 and [int(row.split()[0]) for row in rows] == list(range(1, 5))
    assert "4/4" in two.err and "candidates/s" in two.err and "on 2 worker(s)" in two.err


@pytest.mark.slow
def test_a_killed_worker_is_retried_and_the_results_are_the_same(worker_env):
    candidates, steps, seed = example.population(4, 5), 500, 5
    expected = sorted((example.evaluate(c, steps, seed) for c in candidates), key=lambda r: (r.loss, r.name))
    killed = []

    with local_cluster(2) as (_, client):
        pids_before = set(client.run(os.getpid).values())

        def kill_a_busy_worker(result):
            if killed:
                return
            busy = [address for address, keys in client.processing().items() if keys]
            if busy:
                pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
                os.kill(pid, signal.SIGKILL)  # as if its machine died mid-task
                killed.append(pid)

        results = example.search(client, candidates, steps, seed, progress=False, on_result=kill_a_busy_worker)
        pids_after = set(client.run(os.getpid).values())

    assert killed and killed[0] in pids_before and killed[0] not in pids_after
    assert results == expected
