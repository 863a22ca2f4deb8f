"""CPU_JIT against its peers, measured in one interleaved run.

Workload: 8 activations (tanh, sin, relu, sigmoid, softplus, gaussian,
a*tanh(b*x), leaky_relu) over the rows of a layer, interleaved (row r uses
activation r % 8) or blocked (rows grouped by activation). Prints ns/element
(median of interleaved repeats) for:

* CPU_JIT through the public API (``forward_kernel(z, out=...)``),
* a hand-written C reference: one homogeneous vectorised loop per row, OpenMP
  over rows, libmvec (the limit), from ``peer_kernels.py`` (``c_kernels_probe.py``
  compares the two formula by formula),
* CPU_PYTHON (NumPy, one evaluation per group of rows),
* numba, JAX and PyTorch when installed,

then µs per call of a 32-node layer with batch 1 (against one ``np.tanh`` on
the same array), the cold and warm process figures of ``startup.py`` (8 new
formulas ready to call; a 1024-node layer against ``python -c "import numpy"``), and 12 processes starting
together on a cold cache. Absolute figures drift on shared machines; read the
ratios.

Usage: python benchmarks/cpu_peers.py [--repeats N] [--quick] [--kernels-only] [--no-peers]
       [--shapes 1024x1024,256x256] [--dtypes float32,float64] [--best]

The peers are optional: ``pip install torch==2.13.0 jax numba`` (none is a dependency).
On a machine that other processes share, a call whose OpenMP thread waits for a core
reads as milliseconds for every contender alike (a row where all of them show the
same ns/element): run again when it is quiet, or pass ``--best``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from peer_kernels import optional_peers, reference_kernel  # noqa: E402
import startup  # noqa: E402  (the cold and warm process figures)

CONFIGS = ["tanh", "sin", "relu", "sigmoid", "softplus", "gaussian",
           ("a*tanh(b*num)", {"a": 1.5, "b": 0.7}), "leaky_relu"]


#: Sleep before each contender's calls in the kernel table (see ``timed``).
SETTLE_SECONDS = 0.02


def layer(rows: int, blocked: bool) -> list:
    return [CONFIGS[(r * 8 // rows) if blocked else r % 8] for r in range(rows)]


def kinds(rows: int, blocked: bool) -> np.ndarray:
    return np.array([(r * 8 // rows) if blocked else r % 8 for r in range(rows)], dtype=np.int32)


def rotation(names: list, repeat: int) -> list:
    """``names`` in the order of round ``repeat``: each contender in turn goes first."""
    shift = repeat % len(names)
    return names[shift:] + names[:shift]


def wall_seconds(call) -> float:
    """Seconds one call of ``call`` takes on the wall clock."""
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def timed(calls: dict, repeats: int, seconds_of=wall_seconds, statistic=statistics.median,
          settle: float = 0.0) -> dict:
    """Seconds per call (``statistic`` of the repeats, the median by default), the contenders
    interleaved in a rotating order, each timed call (by ``seconds_of``) right after an
    untimed one of the same contender.

    Whichever call follows another contender (above all NumPy's milliseconds of
    temporaries) pays to refill the caches and wake the OpenMP threads, about 0.05
    ns/element at 1024x1024. In a fixed order that was always CPU_JIT, which made it look
    1.6x the reference instead of 1.3x; the untimed call puts every contender in the state
    of a loop that calls it again and again. ``settle`` seconds of sleep before each
    contender let the worker threads of the one before (PyTorch's, JAX's, numba's and
    OpenMP's spin a while after a call) park: on 2 cores a spinning pool of another
    runtime holds a core that the next contender's second thread waits for, for a whole
    scheduler slice (milliseconds for every contender alike).
    """
    samples = {name: [] for name in calls}
    for repeat in range(repeats):
        for name in rotation(list(calls), repeat):
            if settle:
                time.sleep(settle)
            calls[name]()
            samples[name].append(seconds_of(calls[name]))
    return {name: statistic(s) for name, s in samples.items()}


def verified(calls: dict, reference, direction: str, z: np.ndarray, g: np.ndarray) -> dict:
    """The contenders whose result matches the hand-written reference; a peer that computes
    something else is dropped with a message rather than timed."""
    expected = np.empty_like(z)
    reference(direction == "bwd", z, g, expected)
    tolerance = 2e-5 if z.dtype == np.float32 else 1e-12
    kept = {}
    for name, call in calls.items():
        result = call()
        if result is None:  # the library's calls write into ``out``
            kept[name] = call
            continue
        got = np.asarray(result.detach() if hasattr(result, "detach") else result)
        error = float(np.max(np.abs(got - expected) / (1 + np.abs(expected))))
        if error <= tolerance:
            kept[name] = call
        else:
            print(f"  {name} dropped: differs from the reference by {error:.2e} (relative)")
    return kept


def kernel_table(repeats: int, shapes, dtypes, with_peers: bool = True,
                 statistic=statistics.median) -> None:
    from heterosymnn import SymbolicJITCompiler

    print(f"ns/element, {getattr(statistic, '__name__', statistic)} of {repeats} "
          f"(x = ratio to the hand-written C reference)")
    for dtype in dtypes:
        for rows, cols in shapes:
            for blocked in (False, True):
                configs = layer(rows, blocked)
                rng = np.random.default_rng(0)
                z = (rng.standard_normal((rows, cols)) * 2).astype(dtype)
                g = rng.standard_normal((rows, cols)).astype(dtype)
                out = np.empty_like(z)
                jit = SymbolicJITCompiler(configs, "CPU_JIT", dtype=dtype, strict=True)
                numpy_layer = SymbolicJITCompiler(configs, "CPU_PYTHON", dtype=dtype)
                reference = reference_kernel(dtype, kinds(rows, blocked))
                peers = optional_peers(dtype, kinds(rows, blocked)) if with_peers else {}
                for direction in ("fwd", "bwd"):
                    calls = {}
                    if direction == "fwd":
                        calls["CPU_JIT"] = lambda: jit.forward_kernel(z, out=out)
                        calls["hand-written C"] = lambda: reference(False, z, g, out)
                        if with_peers:
                            calls["NumPy grouped"] = lambda: numpy_layer.forward_kernel(z, out=out)
                    else:
                        calls["CPU_JIT"] = lambda: jit.backward_kernel(z, g, out=out)
                        calls["hand-written C"] = lambda: reference(True, z, g, out)
                        if with_peers:
                            calls["NumPy grouped"] = lambda: numpy_layer.backward_kernel(z, g, out=out)
                    for name, peer in peers.items():
                        calls[name] = peer(direction, z, g)
                    calls = verified(calls, reference, direction, z, g)
                    medians = timed(calls, repeats, statistic=statistic, settle=SETTLE_SECONDS)
                    base = medians["hand-written C"]
                    layout = "blocked" if blocked else "interleaved"
                    cells = "  ".join(f"{name} {t / z.size * 1e9:.3f} ({t / base:.2f}x)"
                                      for name, t in medians.items())
                    print(f"{dtype} {rows}x{cols} {layout:11s} {direction}: {cells}")


def small_call(repeats: int) -> None:
    from heterosymnn import SymbolicJITCompiler

    comp = SymbolicJITCompiler(layer(32, False), "CPU_JIT", strict=True)
    z = np.random.default_rng(0).standard_normal((32, 1)).astype(np.float32)
    out = np.empty_like(z)
    loops = 2000

    def per_call(call):
        def run():
            for _ in range(loops):
                call()
        return run

    medians = timed({"CPU_JIT": per_call(lambda: comp.forward_kernel(z, out=out)),
                     "np.tanh": per_call(lambda: np.tanh(z, out=out))}, max(repeats, 15))
    jit_us, tanh_us = medians["CPU_JIT"] / loops * 1e6, medians["np.tanh"] / loops * 1e6
    print(f"32x1 call: CPU_JIT {jit_us:.2f} us, one np.tanh {tanh_us:.2f} us, ratio {jit_us / tanh_us:.1f}x")


WARM_CHILD = """
import time, numpy as np
from heterosymnn import SymbolicJITCompiler
configs = {configs!r}
comp = SymbolicJITCompiler(configs, "CPU_JIT", strict=True)
comp.forward_kernel(np.ones((len(configs), 4), np.float32))
import sys
print("sympy" in sys.modules)
"""


def crowd(processes: int = 12) -> None:
    configs = layer(8, False) + [("c*sin(num) + d", {"c": 1.0, "d": 0.5})]
    with tempfile.TemporaryDirectory() as cache_dir:
        env = dict(os.environ, HETEROSYMNN_CACHE_DIR=cache_dir, PYTHONPATH=str(ROOT))
        child = WARM_CHILD.format(configs=configs)
        start = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-c", child], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE) for _ in range(processes)]
        codes = [p.wait() for p in procs]
        wall = time.perf_counter() - start
        modules = [r for r in startup.build_log(cache_dir) if r.get("kind") == "c-module"]
        print(f"{processes} processes on a cold cache: {wall:.2f} s wall, exit codes "
              f"{sorted(set(codes))}, {len(modules)} kernel module build(s) with "
              f"{sum(r['functions'] for r in modules)} functions for 9 structures "
              f"(every structure built exactly once: {sum(r['functions'] for r in modules) == 9})")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--quick", action="store_true", help="only 1024x1024 float32")
    parser.add_argument("--kernels-only", action="store_true",
                        help="only the ns/element table (no per-call, cold or warm process figures)")
    parser.add_argument("--no-peers", action="store_true",
                        help="leave out the optional peers (PyTorch, JAX, numba) and NumPy")
    parser.add_argument("--shapes", default=None,
                        help="comma-separated ROWSxCOLS (default 1024x1024,256x256)")
    parser.add_argument("--dtypes", default=None, help="comma-separated (default float32,float64)")
    parser.add_argument("--best", action="store_true",
                        help="the fastest of the repeats instead of the median, for a machine "
                             "that other processes keep busy")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as cache_dir:
        os.environ["HETEROSYMNN_CACHE_DIR"] = cache_dir
        shapes = [(1024, 1024)] if args.quick else [(1024, 1024), (256, 256)]
        dtypes = ["float32"] if args.quick else ["float32", "float64"]
        if args.shapes:
            shapes = [tuple(int(n) for n in s.split("x")) for s in args.shapes.split(",")]
        if args.dtypes:
            dtypes = args.dtypes.split(",")
        kernel_table(args.repeats, shapes, dtypes, with_peers=not args.no_peers,
                     statistic=min if args.best else statistics.median)
        if args.kernels_only:
            return
        small_call(args.repeats)
    with tempfile.TemporaryDirectory() as workdir:
        startup.cold(max(3, args.repeats // 3), Path(workdir))
        startup.warm(max(5, args.repeats // 2), Path(workdir))
    crowd()


if __name__ == "__main__":
    main()
