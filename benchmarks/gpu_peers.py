"""GPU_CUDA against its peers and the memory floor, in one interleaved run.

Same 8 activations as ``cpu_peers.py`` (row r uses activation r % 8). For
1024x1024, 1024x65536 and 32x1, float32 and float64, forward and backward,
prints ns/element (median of CUDA-event-timed repeats, contenders
interleaved as in ``cpu_peers.timed``) for:

* GPU_CUDA through the public API (``forward_kernel(z, out=...)``),
* the memory floor: a device-to-device copy of z into out (forward), an
  element-wise add of z and grad into out (backward: same bytes moved),
* PyTorch CUDA grouped (eager) and ``torch.compile``, when installed,

and the launch overhead per call (wall time of a 32x1 call). Target: within
1.3x of the copy floor at large sizes, ahead of every peer. Needs a GPU and
CuPy; prints why and exits 0 without them.

Usage: python benchmarks/gpu_peers.py [--repeats N] [--quick]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from cpu_peers import CONFIGS, timed  # noqa: E402  (the same 8 activations as the CPU benchmark)
from heterosymnn import SymbolicJITCompiler  # noqa: E402

SHAPES = [(1024, 1024), (1024, 65536), (32, 1)]


def event_seconds(cp):
    """Seconds of GPU time one call takes, between CUDA events on the current stream."""
    def seconds_of(call) -> float:
        start, stop = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        call()
        stop.record()
        stop.synchronize()
        return cp.cuda.get_elapsed_time(start, stop) * 1e-3
    return seconds_of


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=31)
    parser.add_argument("--quick", action="store_true", help="float32 only")
    args = parser.parse_args(argv)
    try:
        import cupy as cp
        if cp.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError("no CUDA device")
    except Exception as exc:  # a benchmark, not the library: report and stop
        print(f"no GPU to measure ({type(exc).__name__}: {exc})")
        return 0
    props = cp.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    print(f"GPU: {name}; ns/element (x = ratio to the device-to-device copy of the same bytes)")
    seconds_of = event_seconds(cp)
    for dtype in (["float32"] if args.quick else ["float32", "float64"]):
        for rows, cols in SHAPES:
            configs = [CONFIGS[r % 8] for r in range(rows)]
            comp = SymbolicJITCompiler(configs, "GPU_CUDA", dtype=dtype, strict=True)
            rng = np.random.default_rng(0)
            z = cp.asarray((rng.standard_normal((rows, cols)) * 2).astype(dtype))
            g = cp.asarray(rng.standard_normal((rows, cols)).astype(dtype))
            out = cp.empty_like(z)
            try:
                from peer_kernels import torch_peers

                peers = torch_peers(np.arange(rows) % 8, device="cuda")
            except ImportError:
                peers = {}
            for direction in ("fwd", "bwd"):
                calls = {}
                if direction == "fwd":
                    calls["GPU_CUDA"] = lambda: comp.forward_kernel(z, out=out)
                    calls["copy floor"] = lambda: out.__setitem__(Ellipsis, z)
                else:
                    calls["GPU_CUDA"] = lambda: comp.backward_kernel(z, g, out=out)
                    # the same traffic as backward: read two arrays, write one
                    calls["copy floor"] = lambda: cp.add(z, g, out=out)
                for peer, factory in peers.items():
                    calls[peer] = factory(direction, z, g)
                medians = timed(calls, args.repeats, seconds_of)
                floor = medians["copy floor"]
                cells = "  ".join(f"{k} {t / z.size * 1e9:.4f} ({t / floor:.2f}x)" for k, t in medians.items())
                print(f"{dtype} {rows}x{cols} {direction}: {cells}")
    comp = SymbolicJITCompiler([CONFIGS[r % 8] for r in range(32)], "GPU_CUDA", strict=True)
    z = cp.ones((32, 1), dtype=np.float32)
    out = cp.empty_like(z)
    loops = 2000
    comp.forward_kernel(z, out=out)
    cp.cuda.Device().synchronize()
    start = time.perf_counter()
    for _ in range(loops):
        comp.forward_kernel(z, out=out)
    cp.cuda.Device().synchronize()
    print(f"32x1 call (launch overhead, wall): {(time.perf_counter() - start) / loops * 1e6:.2f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
