"""Cache stress: many processes building random CPU_JIT layers on one cache while others clear and prune it.

Run by ``test_cache_stress.py`` (small) and ``benchmarks/cache_stress.py`` (long);
``python stress_worker.py MODE ...`` is one process of a run:

once INDICES                       construct one layer of the POOL structures at INDICES
                                   (comma-separated), check it, print its cache stats
layers SEED ROUNDS SECONDS POOL GO  construct ROUNDS random layers (or until SECONDS pass)
                                   from the first POOL structures, each checked against NumPy;
                                   print one JSON line
maintain SEED COMMAND MAX_SIZE STOP GO
                                   run ``python -m heterosymnn.cache COMMAND`` (``clear``, or
                                   ``prune --max-size MAX_SIZE``) again and again until STOP exists

What makes a build provably needless: builds are logged in ``builds.jsonl`` under
the key's lock, and so are removals by clear and prune (before the entry goes).
Layer workers add, under the structures' record locks, which structures each
compiler run compiled (``"event": "compiled"``). :func:`check_log` then proves
that no key was built, and no structure compiled, twice without a removal of
it (or of the module that held its code) in between.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import numpy as np

from cache_worker import wait_for  # the worker script beside this one (its folder is on sys.path)

RESULT_MARKER = "RESULT "
#: How long a worker waits for the signal that starts all of them together.
START_TIMEOUT_S = 300.0
COMPILED = "compiled"
REMOVED = "removed"

# (formula, constant names, f, f'): the reference is plain NumPy, not the library.
POOL: List[Tuple[str, str, Callable[..., Any], Callable[..., Any]]] = [
    ("a*sin(w*num) + b", "awb", lambda z, a, w, b: a * np.sin(w * z) + b, lambda z, a, w, b: a * w * np.cos(w * z)),
    ("tanh(num)", "", np.tanh, lambda z: 1 - np.tanh(z) ** 2),
    ("a*exp(-num**2)", "a", lambda z, a: a * np.exp(-z ** 2), lambda z, a: -2 * a * z * np.exp(-z ** 2)),
    ("num**3 - c*num", "c", lambda z, c: z ** 3 - c * z, lambda z, c: 3 * z ** 2 - c),
    ("k*log(1 + num**2)", "k", lambda z, k: k * np.log(1 + z ** 2), lambda z, k: 2 * k * z / (1 + z ** 2)),
    ("s*atan(num)", "s", lambda z, s: s * np.arctan(z), lambda z, s: s / (1 + z ** 2)),
    ("sqrt(1 + num**2)", "", lambda z: np.sqrt(1 + z ** 2), lambda z: z / np.sqrt(1 + z ** 2)),
    ("cos(num) + num/2", "", lambda z: np.cos(z) + z / 2, lambda z: -np.sin(z) + 0.5),
    ("a*num**2 + b*num", "ab", lambda z, a, b: a * z ** 2 + b * z, lambda z, a, b: 2 * a * z + b),
    ("sin(num)**2", "", lambda z: np.sin(z) ** 2, lambda z: 2 * np.sin(z) * np.cos(z)),
    ("exp(num/4) - 1", "", lambda z: np.exp(z / 4) - 1, lambda z: np.exp(z / 4) / 4),
    ("num/(1 + num**2)", "", lambda z: z / (1 + z ** 2), lambda z: (1 - z ** 2) / (1 + z ** 2) ** 2),
    ("cosh(num/3)", "", lambda z: np.cosh(z / 3), lambda z: np.sinh(z / 3) / 3),
    ("a*tanh(b*num) + c", "abc", lambda z, a, b, c: a * np.tanh(b * z) + c,
     lambda z, a, b, c: a * b * (1 - np.tanh(b * z) ** 2)),
    ("num*exp(-a*num**2)", "a", lambda z, a: z * np.exp(-a * z ** 2),
     lambda z, a: (1 - 2 * a * z ** 2) * np.exp(-a * z ** 2)),
    ("k*sinh(num/2)", "k", lambda z, k: k * np.sinh(z / 2), lambda z, k: k * np.cosh(z / 2) / 2),
]


# -- one layer worker ---------------------------------------------------------------------------------
def _random_layer(rng: random.Random, pool: int) -> List[Tuple[int, Dict[str, float]]]:
    picks = [rng.randrange(pool) for _ in range(rng.randint(2, 6))]
    return [(i, {name: rng.uniform(0.5, 1.5) for name in POOL[i][1]}) for i in picks]


def _check_layer(layer: List[Tuple[int, Dict[str, float]]], rng: random.Random) -> str:
    """Build ``layer`` on CPU_JIT and compare it with NumPy; ``""`` or what is wrong."""
    from heterosymnn import SymbolicJITCompiler

    configs = [(POOL[i][0], constants) for i, constants in layer]
    comp = SymbolicJITCompiler(configs, "CPU_JIT", dtype="float64", strict=True)
    z = np.array([[rng.uniform(-2, 2) for _ in range(rng.randint(1, 17))]] * len(layer))
    z += np.linspace(0, 0.5, len(layer))[:, None]  # rows differ even with one column
    grad = np.full_like(z, 0.75)
    forward, backward = comp.forward_kernel(z), comp.backward_kernel(z, grad)
    for row, (i, constants) in enumerate(layer):
        args = [constants[name] for name in POOL[i][1]]
        for what, got, expected in (("forward", forward[row], POOL[i][2](z[row], *args)),
                                    ("backward", backward[row], grad[row] * POOL[i][3](z[row], *args))):
            if not np.allclose(got, expected, rtol=1e-9, atol=1e-12):
                return f"{what} of {POOL[i][0]} {constants} on {z[row].tolist()}: {got.tolist()} != {expected.tolist()}"
    return ""


def _log_compiler_runs() -> None:
    """Append a ``compiled`` line to the build log for every compiler run that compiled structures."""
    from heterosymnn.backends import cffi_build, cpu_modules
    from heterosymnn.cache import buildlog, default_cache
    from heterosymnn.codegen import c_source

    sources: Dict[str, List[str]] = {}  # generated source -> record keys of its structures
    context: Dict[str, Any] = {}
    real_compile, real_render, real_build = cpu_modules._compile, c_source.render_c_module, cffi_build.build_extension

    def compile_(cache, missing, toolchain, dtype, structures_for):
        context.update(toolchain=toolchain, dtype=dtype)
        return real_compile(cache, missing, toolchain, dtype, structures_for)

    def render(structures, dtype, **options):
        module = real_render(structures, dtype, **options)
        sources[module.source] = sorted(cpu_modules.structure_entry_key(s.key, context["toolchain"], dtype)
                                        for s in structures)
        return module

    def build(request, *args, **kwargs):
        result = real_build(request, *args, **kwargs)
        structures = sources.get(request.source)
        if structures:  # still under the structures' record locks: ordered with their removals
            buildlog.append(default_cache().layout.log, {
                "event": COMPILED, "pid": os.getpid(), "structures": structures,
                "module": request.module_name.rsplit("_", 1)[-1]})
        return result

    # cpu_modules imports build_extension at build time, so patching its home module reaches it.
    cpu_modules._compile, c_source.render_c_module, cffi_build.build_extension = compile_, render, build


def run_layers(seed: int, rounds: int, seconds: float, pool: int) -> Dict[str, Any]:
    from heterosymnn import cache

    _log_compiler_runs()
    rng = random.Random(seed)
    deadline = time.monotonic() + seconds
    done, failures, caught_warnings = 0, [], []
    while done < rounds and time.monotonic() < deadline:
        layer = _random_layer(rng, pool)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                wrong = _check_layer(layer, rng)
            except Exception:  # noqa: BLE001 - every failure is reported, none may happen
                wrong = traceback.format_exc(limit=6)
        caught_warnings += [f"{w.category.__name__}: {w.message}" for w in caught]
        if wrong:
            failures.append(wrong)
        done += 1
    return {"pid": os.getpid(), "layers": done, "failures": failures, "warnings": caught_warnings,
            "stats": cache.stats().as_dict()}


# -- one maintenance worker ----------------------------------------------------------------------------
def run_maintenance(seed: int, command: str, max_size: str, stop: Path) -> Dict[str, Any]:
    rng = random.Random(seed)
    args = ["clear"] if command == "clear" else ["prune", "--max-size", max_size]
    runs, exit_codes, removed, skipped, errors = 0, {}, 0, 0, []
    while not stop.exists():
        done = subprocess.run([sys.executable, "-m", "heterosymnn.cache", *args, "--json"],
                              capture_output=True, text=True, timeout=300)
        runs += 1
        exit_codes[done.returncode] = exit_codes.get(done.returncode, 0) + 1
        try:
            report = json.loads(done.stdout)
            removed += report["removed"]
            skipped += len(report["skipped"])
        except (ValueError, KeyError):
            errors.append(f"exit {done.returncode}: {done.stdout[-300:]} {done.stderr[-600:]}")
        time.sleep(rng.uniform(0.2, 1.0))  # let some builds land between two runs
    return {"pid": os.getpid(), "command": command, "runs": runs, "exit_codes": exit_codes,
            "removed": removed, "skipped": skipped, "errors": errors}


# -- the proof ------------------------------------------------------------------------------------------
def check_log(records: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Needless builds in a build log, and builds per structure per clear epoch.

    A key built twice, or a structure compiled twice, with no logged removal of
    it (for a structure: of its record, or of the module holding its code)
    between the two is a needless build. A clear epoch starts at the first
    removal logged by a new ``clear`` process.
    """
    violations: List[str] = []
    built: set = set()
    holder: Dict[str, str] = {}  # structure record key -> module (key prefix) its code was compiled into
    epoch, clears, per_epoch = 0, set(), {}  # per_epoch: (epoch, structure) -> compiles
    for record in records:
        event = record.get("event")
        if event == REMOVED:
            key = record["key"]
            if record.get("by") == "clear" and record["pid"] not in clears:
                clears.add(record["pid"])
                epoch += 1
            built.discard(key)
            for structure in [s for s, module in holder.items() if s == key or key.startswith(module)]:
                del holder[structure]
        elif event == COMPILED:
            for structure in record["structures"]:
                if structure in holder:
                    violations.append(f"structure {structure[:12]} compiled again by pid {record['pid']} "
                                      f"although neither it nor module {holder[structure]} was removed")
                holder[structure] = record["module"]
                per_epoch[epoch, structure] = per_epoch.get((epoch, structure), 0) + 1
        elif event is None:
            if record["key"] in built:
                violations.append(f"{record.get('kind')} {record['key'][:12]} built again by pid {record['pid']} "
                                  f"although it was not removed")
            built.add(record["key"])
    compiled = [r for r in records if r.get("event") == COMPILED]
    return {
        "violations": violations,
        "builds": sum(1 for r in records if "event" not in r),
        "module_builds": sum(1 for r in records if "event" not in r and r.get("kind") == "c-module"),
        "compiler_runs_with_structures": len(compiled),
        "structures_compiled": sum(len(r["structures"]) for r in compiled),
        "removals": {by: sum(1 for r in records if r.get("event") == REMOVED and r.get("by") == by)
                     for by in ("clear", "prune")},
        "clear_epochs": epoch + 1,
        "max_compiles_per_structure_per_epoch": max(per_epoch.values(), default=0),
    }


def leftovers(root: Path) -> Dict[str, List[str]]:
    """What a finished run must not leave: build directories, lock files, entries being deleted."""
    return {
        "temp_dirs": sorted(p.name for p in (root / "tmp").glob("*")),
        "lock_files": sorted(p.name for p in (root / "locks").glob("*/*")),
        "trash": sorted(p.name for p in (root / "trash").glob("*")),
    }


# -- a whole run -----------------------------------------------------------------------------------------
def run_stress(cache_dir: Path, work_dir: Path, processes: int, rounds: int, seconds: float, pool: int,
               pruners: int = 1, clearers: int = 1, max_size: str = "40K", seed: int = 0) -> Dict[str, Any]:
    """Run the layer workers and the maintainers on ``cache_dir`` together; a summary of it all."""
    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, HETEROSYMNN_CACHE_DIR=str(cache_dir), HETEROSYMNN_LOCK_TIMEOUT="600",
               PYTHONPATH=os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")])))
    go, stop = work_dir / "go", work_dir / "stop"

    def start(*args: Any) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, __file__, *map(str, args)], env=env, cwd=str(work_dir),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    workers = [start("layers", seed * 1000 + i, rounds, seconds, pool, go) for i in range(processes)]
    maintainers = [start("maintain", seed * 1000 + 500 + i, "prune" if i < pruners else "clear", max_size, stop, go)
                   for i in range(pruners + clearers)]
    started = time.monotonic()
    go.touch()
    try:
        layer_results = [_result_of(p, seconds + 600) for p in workers]
    finally:
        stop.touch()
        maintenance = [_result_of(p, 600) for p in maintainers]
    wall = time.monotonic() - started
    from heterosymnn.cache import buildlog
    from heterosymnn.cache.key import CACHE_SCHEMA

    root = cache_dir / f"v{CACHE_SCHEMA}"
    return {
        "processes": processes, "pool": pool, "wall_seconds": round(wall, 1),
        "layers": sum(r["layers"] for r in layer_results),
        "failures": [f for r in layer_results for f in r["failures"]],
        "warnings": [w for r in layer_results for w in r["warnings"]],
        "maintenance": maintenance,
        "log": check_log(buildlog.read(root / "builds.jsonl")),
        "leftovers": leftovers(root),
    }


def _result_of(proc: subprocess.Popen, timeout: float) -> Dict[str, Any]:
    out, err = proc.communicate(timeout=timeout)
    lines = [line for line in out.splitlines() if line.startswith(RESULT_MARKER)]
    if proc.returncode != 0 or not lines:
        return {"crashed": proc.returncode, "layers": 0, "failures": [f"exit {proc.returncode}: {err[-2000:]}"],
                "warnings": [], "stderr": err[-2000:]}
    return json.loads(lines[-1][len(RESULT_MARKER):])


def main(mode: str, *args: str) -> None:
    if mode == "once":
        from heterosymnn import cache

        layer = [(int(i), {name: 1.0 for name in POOL[int(i)][1]}) for i in args[0].split(",")]
        result = {"wrong": _check_layer(layer, random.Random(0)), "stats": cache.stats().as_dict()}
    elif mode == "layers":
        seed, rounds, seconds, pool, go = int(args[0]), int(args[1]), float(args[2]), int(args[3]), Path(args[4])
        import heterosymnn.jit  # noqa: F401 - imports before the start, so that all start together

        wait_for(go, timeout=START_TIMEOUT_S)
        result = run_layers(seed, rounds, seconds, pool)
    elif mode == "maintain":
        seed, command, max_size, stop, go = int(args[0]), args[1], args[2], Path(args[3]), Path(args[4])
        wait_for(go, timeout=START_TIMEOUT_S)
        result = run_maintenance(seed, command, max_size, stop)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    sys.stdout.write(RESULT_MARKER + json.dumps(result) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
