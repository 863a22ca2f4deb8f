"""Cache stress, the long run: many processes build random CPU_JIT layers on one cache
while other processes run ``python -m heterosymnn.cache prune`` and ``clear`` in a loop.

Every layer is checked against NumPy; afterwards the build log proves that no
key was built, and no structure compiled, twice without a removal between
(see ``tests/cache/stress_worker.py``), and the cache must hold no build
directories, lock files or half-deleted entries. Exit status 0 when all holds.

Usage: python benchmarks/cache_stress.py [--processes 32] [--rounds 20] [--seconds 480]
       [--pool 16] [--pruners 1] [--clearers 1] [--max-size 64K] [--seed 0] [--json]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "cache"))
import stress_worker  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=32, help="layer-building processes")
    parser.add_argument("--rounds", type=int, default=20, help="layers per process")
    parser.add_argument("--seconds", type=float, default=480, help="stop starting layers after this long")
    parser.add_argument("--pool", type=int, default=len(stress_worker.POOL),
                        help=f"distinct structures drawn from (at most {len(stress_worker.POOL)})")
    parser.add_argument("--pruners", type=int, default=1, help="processes running prune in a loop")
    parser.add_argument("--clearers", type=int, default=1, help="processes running clear in a loop")
    parser.add_argument("--max-size", default="64K", help="prune's --max-size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the whole summary as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hsnn-cache-stress-") as work:
        summary = stress_worker.run_stress(
            Path(work) / "cache", Path(work), args.processes, args.rounds, args.seconds, min(args.pool, len(stress_worker.POOL)),
            pruners=args.pruners, clearers=args.clearers, max_size=args.max_size, seed=args.seed)
    log, left = summary["log"], summary["leftovers"]
    ok = not (summary["failures"] or log["violations"] or any(left.values())
              or any(m.get("errors") or m.get("crashed") for m in summary["maintenance"]))
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{summary['processes']} processes, pool of {summary['pool']} structures, {summary['wall_seconds']} s")
        print(f"layers built and checked:   {summary['layers']} ({len(summary['failures'])} failures, "
              f"{len(summary['warnings'])} warnings)")
        print(f"compiler runs:              {log['builds']} ({log['module_builds']} of structures, "
              f"{log['structures_compiled']} structures compiled)")
        print(f"removals:                   {log['removals']['clear']} by clear, {log['removals']['prune']} by prune, "
              f"{log['clear_epochs']} clear epochs")
        print(f"needless builds:            {len(log['violations'])}")
        print(f"max compiles of a structure in one clear epoch: {log['max_compiles_per_structure_per_epoch']} "
              f"(more than 1 only after prune removed it)")
        for run in summary["maintenance"]:
            print(f"{run.get('command', '?'):<6} runs: {run.get('runs')}, exit codes {run.get('exit_codes')}, "
                  f"removed {run.get('removed')}, skipped {run.get('skipped')}, errors {len(run.get('errors', []))}")
        print(f"leftovers:                  {sum(len(v) for v in left.values())} {left if any(left.values()) else ''}")
        for text in (summary["failures"] + log["violations"])[:10]:
            print("  " + text.strip().replace("\n", "\n  "))
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
