"""Helpers shared by the cache tests: keys, builders, other processes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from heterosymnn.cache import KernelCache, cache_key

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("cache_worker.py")


def key_for(name: str) -> str:
    return cache_key("test", source=f"/* {name} */", toolchain_identity="fake-cc 1.0")


def file_builder(content: bytes = b"artifact" * 64, name: str = "kernel.so", functions: int = 2,
                 calls: Optional[List[Path]] = None) -> Callable[[Path], Dict[str, Any]]:
    """A builder writing one file; appends its build directory to ``calls``."""

    def build(build_dir: Path) -> Dict[str, Any]:
        if calls is not None:
            calls.append(build_dir)
        (build_dir / name).write_bytes(content)
        return {"functions": functions, "toolchain": "fake-cc 1.0", "kind": "test"}

    return build


def subprocess_env(cache_dir: Path, **extra: str) -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["HETEROSYMNN_CACHE_DIR"] = str(cache_dir)
    env.update(extra)
    return env


def start_worker(cache_dir: Path, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKER), *args], env=subprocess_env(cache_dir, **env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_file(path: Path, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Wait until the worker ``proc`` creates ``path`` (its signal); fail if it ends first or times out."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the worker ended before creating {path.name}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"the worker never created {path}"
        time.sleep(0.005)


def start_lock_holder(cache_dir: Path, key: str, ready: Path) -> subprocess.Popen:
    """A worker process holding ``key``'s lock, returned once it holds it (it signals via ``ready``)."""
    holder = start_worker(cache_dir, "hold", key, str(ready))
    try:
        wait_for_file(ready, holder)
    except BaseException:
        holder.kill()
        holder.communicate(timeout=30)
        raise
    return holder


def run_cli(cache_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "heterosymnn.cache", *args], env=subprocess_env(cache_dir),
                          capture_output=True, text=True, timeout=60)


def read_log(cache: KernelCache) -> List[Dict[str, Any]]:
    path = cache.root / "builds.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
