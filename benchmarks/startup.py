"""How long a new process takes to get a layer ready, cold and warm.

Two figures, each a median over repeats interleaved with its peer, as ratios:

* **cold**: a new process builds a layer of 8 formulas no cache has seen (the
  toolchain record and the layer driver already cached, as after any first
  use), from process start to the first call returning (the clock of the parent
  before it starts the child, against the child's clock when the call returns:
  the ~0.2 s the interpreter then takes to exit, most of it tearing SymPy down,
  is not part of being ready, and is printed beside). Printed with where the
  time goes: interpreter + NumPy, heterosymnn import, SymPy import, analysis,
  the compiler runs (from the build log).
* **warm**: import + construct + call of a 1024-node layer whose kernels are
  cached, against ``python -c "import numpy"``, bytecode caching on (as on a
  user's machine).

Usage: python benchmarks/startup.py [--repeats N]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

NAMED = ["tanh", "sin", "relu", "sigmoid", "softplus", "gaussian", ("a*tanh(b*num)", {"a": 1.5, "b": 0.5}),
         "leaky_relu"]

CHILD = """
import time
start = time.perf_counter()
import numpy as np
after_numpy = time.perf_counter()
from heterosymnn import SymbolicJITCompiler
after_import = time.perf_counter()
configs = {configs}
comp = SymbolicJITCompiler(configs, "CPU_JIT", strict=True)
constructed = time.perf_counter()
comp.forward_kernel(np.ones((len(configs), 4), np.float32))
called = time.perf_counter()
ready_at = time.time()
import sys, json
print(json.dumps({{"numpy": after_numpy - start, "import": after_import - after_numpy,
                  "construct": constructed - after_import, "call": called - constructed,
                  "sympy": "sympy" in sys.modules, "ready_at": ready_at}}))
"""

SYMPY_IMPORT = "import time; s = time.perf_counter(); import sympy; print(time.perf_counter() - s)"


def new_formulas(seed: int) -> list:
    """8 formulas whose structures no earlier repeat built (the integer powers differ per seed)."""
    k = seed + 2
    return [f"tanh(num)*num**{k}", f"sin(num)**{k} + num", f"exp(-num**2)*num**{k}",
            f"log(1 + exp(num))*num**{k}", f"num/(1 + abs(num))**{k}", f"cos(num)**{k}*num",
            f"atan(num)*num**{k}", f"erf(num)**{k} + num"]


def environment(cache_dir: str, as_a_user: bool = False) -> dict:
    """The children's environment: the cache in ``cache_dir``; ``as_a_user``: found as a user's
    machine finds it, through the per-user cache directory (on Linux under XDG_CACHE_HOME)
    rather than HETEROSYMNN_CACHE_DIR, so the warm start pays for locating it."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # users' interpreters cache bytecode
    env.pop("HETEROSYMNN_CACHE_DIR", None)
    if as_a_user and sys.platform.startswith("linux"):
        env["XDG_CACHE_HOME"] = cache_dir
    else:
        env["HETEROSYMNN_CACHE_DIR"] = cache_dir
    return env


def run(argv: list, env: dict) -> tuple:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - start, done.stdout


def run_until_ready(argv: list, env: dict) -> tuple:
    """(seconds from starting the child to its first call returning, seconds it then took to
    exit, the child's report)."""
    started = time.time()
    done = subprocess.run(argv, env=env, check=True, capture_output=True, text=True)
    ended = time.time()
    report = json.loads(done.stdout)
    return report["ready_at"] - started, ended - report["ready_at"], report


def build_log(cache_dir: str) -> list:
    path = Path(cache_dir) / "v1" / "builds.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def cold(repeats: int, workdir: Path) -> None:
    template = workdir / "template"
    # The toolchain record and the driver: what any earlier use of heterosymnn leaves behind.
    run([sys.executable, "-c", CHILD.format(configs=repr(["relu"]))], environment(str(template)))
    walls, exits, parts, compiler, numpy_walls = [], [], [], [], []
    for repeat in range(repeats):
        cache_dir = workdir / f"cold{repeat}"
        shutil.copytree(template, cache_dir)
        env = environment(str(cache_dir))
        ready, exit_seconds, report = run_until_ready(
            [sys.executable, "-c", CHILD.format(configs=repr(new_formulas(repeat)))], env)
        walls.append(ready)
        exits.append(exit_seconds)
        parts.append(report)
        modules = [r for r in build_log(str(cache_dir)) if r.get("kind") == "c-module"]
        compiler.append(sum(r["seconds"] for r in modules))
        numpy_walls.append(run([sys.executable, "-c", "import numpy"], env)[0])
    sympy_import = statistics.median(
        float(run([sys.executable, "-c", SYMPY_IMPORT], environment(str(template)))[1]) for _ in range(5))
    median = statistics.median
    print(f"cold: 8 new formulas, new process, ready to call: {median(walls):.2f} s wall "
          f"(target <= 1.2 s; {repeats} runs, min {min(walls):.2f} s; the exit then took "
          f"{median(exits):.2f} s more)")
    print(f"  python + numpy {median(numpy_walls):.2f} s | heterosymnn import "
          f"{median(p['import'] for p in parts):.2f} s | construct {median(p['construct'] for p in parts):.2f} s "
          f"(of which SymPy import ~{sympy_import:.2f} s; compiler runs {median(compiler):.2f} s summed over "
          f"the parallel runs) | "
          f"first call {median(p['call'] for p in parts) * 1e3:.1f} ms")


def warm(repeats: int, workdir: Path) -> None:
    cache_dir = str(workdir / "warm")
    env = environment(cache_dir, as_a_user=True)
    # Written as a user writes it: a 1024-entry literal would cost the child a few ms to compile.
    child = CHILD.format(configs=f"[{NAMED!r}[i % {len(NAMED)}] for i in range(1024)]")
    run([sys.executable, "-c", child], env)  # builds
    run([sys.executable, "-c", child], env)  # writes the bytecode
    ours, numpy_only, parts = [], [], []
    for _ in range(repeats):
        wall, out = run([sys.executable, "-c", child], env)
        ours.append(wall)
        parts.append(json.loads(out))
        numpy_only.append(run([sys.executable, "-c", "import numpy"], env)[0])
    ratio = statistics.median(ours) / statistics.median(numpy_only)
    median = statistics.median
    print(f"warm: import + construct (1024 nodes) + call {median(ours) * 1e3:.0f} ms, "
          f"python -c 'import numpy' {median(numpy_only) * 1e3:.0f} ms: ratio {ratio:.2f}x (target <= 1.5x)")
    print(f"  inside the process: numpy {median(p['numpy'] for p in parts) * 1e3:.1f} ms | heterosymnn import "
          f"{median(p['import'] for p in parts) * 1e3:.1f} ms | construct {median(p['construct'] for p in parts) * 1e3:.1f}"
          f" ms | call {median(p['call'] for p in parts) * 1e3:.2f} ms | SymPy imported: "
          f"{any(p['sympy'] for p in parts)}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir:
        warm(max(args.repeats * 3, 15), Path(workdir))
        cold(args.repeats, Path(workdir))


if __name__ == "__main__":
    main()
