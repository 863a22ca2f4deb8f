"""Cache code run in a separate process by the tests: ``python cache_worker.py MODE ...``.

Modes
-----
build KEY READY_DIR GO SLEEP  say ready in READY_DIR, wait for GO, build KEY (builder sleeps
                             SLEEP s); print JSON
hold KEY READY_FILE        take KEY's lock, create READY_FILE, sleep until killed
die-mid-build KEY READY    start building KEY, write half a file, create READY, sleep until killed
key                        print cache_key() of fixed inputs
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

from heterosymnn.cache import KernelCache, cache_key

CONTENT = b"0123456789abcdef" * 4096  # 64 KiB, the complete artifact


def wait_for(path: Path, timeout: Optional[float] = None) -> None:
    """Wait until ``path`` exists (another process's signal), for ever or up to ``timeout`` s."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while not path.exists():
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.005)


def main(mode: str, *args: str) -> None:
    if mode == "key":
        print(cache_key("cpu", source="double f(double x);", toolchain_identity="gcc 13.2 /usr/bin/gcc",
                        flags=["-O3", "-fopenmp"], extra={"openmp": "libgomp", "dtype": "float32"}))
        return
    cache = KernelCache()
    key = args[0]
    if mode == "build":
        ready_dir, go, sleep = Path(args[1]), Path(args[2]), float(args[3])
        (ready_dir / str(os.getpid())).touch()
        wait_for(go)  # all start together, after their imports

        def builder(build_dir: Path) -> dict:
            time.sleep(sleep)
            (build_dir / "kernel.so").write_bytes(CONTENT)
            return {"functions": 3, "toolchain": f"fake-cc pid {os.getpid()}"}

        entry = cache.build(key, builder)
        data = entry.file("kernel.so").read_bytes()
        print(json.dumps({"path": str(entry.path), "sha256": hashlib.sha256(data).hexdigest(),
                          "stats": cache.stats().as_dict(), "built_by": entry.meta["toolchain"]}))
    elif mode == "hold":
        with cache.locked([key]):
            Path(args[1]).touch()
            time.sleep(3600)
    elif mode == "die-mid-build":

        def builder(build_dir: Path) -> dict:
            with open(build_dir / "kernel.so", "wb") as stream:
                stream.write(CONTENT[: len(CONTENT) // 2])
                stream.flush()
                Path(args[1]).touch()
                time.sleep(3600)
            return {}

        cache.build(key, builder)
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(*sys.argv[1:])
