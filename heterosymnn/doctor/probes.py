"""The doctor's read-only probes: each returns one JSON-ready section.

A probe may raise; :func:`heterosymnn.doctor.collect` records the error and
goes on, so one broken probe never hides what the others found. Probes that
touch optional or fragile things (CuPy, the cache directory) also guard their
own sub-steps, so a partial answer beats none.
"""
from __future__ import annotations

import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

PACKAGES = ("heterosymnn", "numpy", "sympy", "cffi", "setuptools", "platformdirs", "filelock",
            "cupy", "ziglang")
# CuPy ships as one of several distributions, named after the CUDA major version.
_CUPY_DISTS = ("cupy", "cupy-cuda13x", "cupy-cuda12x", "cupy-cuda11x", "cupy-cuda110",
               "cupy-cuda102", "cupy-rocm-6-0", "cupy-rocm-5-0")
EXTRA_ENV = ("CC", "CUDA_PATH", "CUDA_HOME", "OMP_NUM_THREADS")


def _guard(step: Callable[[], Any]) -> Any:
    """Run one sub-step; its failure becomes ``"error: ..."`` instead of escaping."""
    try:
        return step()
    except Exception as exc:  # a probe reports, it never crashes the doctor
        return f"error: {type(exc).__name__}: {exc}"


def _cpu_features() -> Optional[List[str]]:
    """CPU features the instruction-set level depends on (None when unknown)."""
    from ..toolchains import isa

    words = isa.cpu_features()
    if words is None:
        return None
    relevant = set(isa.X86_64_V3) | {"avx512f", "asimd", "neon", "sve"}
    return sorted(set(isa.normalise_features(words)) & relevant)


def probe_platform() -> Dict[str, Any]:
    from ..toolchains import host_level

    return {
        "system": platform.system(),
        "release": platform.release(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "python_executable": sys.executable,
        "cpu_count": os.cpu_count(),
        "isa_level": _guard(host_level),
        "cpu_features": _guard(_cpu_features),
    }


def _version(dist: str) -> Optional[str]:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def probe_packages() -> Dict[str, Optional[str]]:
    out: Dict[str, Optional[str]] = {}
    for name in PACKAGES:
        if name == "cupy":
            found = [(d, _version(d)) for d in _CUPY_DISTS]
            found = [(d, v) for d, v in found if v]
            out[name] = f"{found[0][1]} ({found[0][0]})" if found else None
            continue
        out[name] = _version(name)
    if out["heterosymnn"] is None:  # running from a source tree that was never installed
        from .. import __version__

        out["heterosymnn"] = f"{__version__} (not installed, imported from source)"
    return out


def probe_toolchains() -> List[Dict[str, Any]]:
    from ..toolchains import detect_all

    rows = []
    for result in detect_all():
        chain = result.toolchain
        rows.append({
            "name": result.name,
            "usable": result.usable,
            "family": chain.name if chain else None,
            "path": chain.path if chain else None,
            "version": chain.version if chain else None,
            "openmp": chain.openmp if chain else None,
            "isa": chain.isa if chain else None,
            "reason": result.reason,
        })
    from .cuda_compilers import compiler_rows  # CUDA compilers: entries "nvrtc" and "nvcc"

    return rows + compiler_rows()


def _device(cupy: Any, index: int) -> Dict[str, Any]:
    props = cupy.cuda.runtime.getDeviceProperties(index)
    name = props.get("name", b"")
    return {
        "id": index,
        "name": name.decode(errors="replace") if isinstance(name, bytes) else str(name),
        "compute_capability": f"{props.get('major')}.{props.get('minor')}",
        "memory_bytes": props.get("totalGlobalMem"),
    }


def _cuda_version(number: Any) -> Any:
    """1202 -> "12.2" (CUDA's integer encoding); anything else is kept."""
    if isinstance(number, int) and number > 0:
        return f"{number // 1000}.{(number % 1000) // 10}"
    return number


def _compilers() -> Dict[str, Any]:
    from .cuda_compilers import compiler_rows

    rows = compiler_rows()
    selected = [row["name"] for row in rows if row["selected"]]
    return {"compiler": selected[0] if selected else None,
            "compilers": {row["name"]: {k: row[k] for k in ("usable", "version", "path", "architectures", "reason")}
                          for row in rows}}


def probe_cuda() -> Dict[str, Any]:
    compilers = _guard(_compilers)
    compilers = compilers if isinstance(compilers, dict) else {"compilers": compilers}
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA install raising anything else
        return {"available": False,
                "reason": f"CuPy cannot be imported ({type(exc).__name__}: {exc}); "
                          "install it with `pip install heterosymnn[gpu]`", **compilers}
    info: Dict[str, Any] = {"cupy_version": getattr(cupy, "__version__", None), **compilers}
    info["cuda_build_version"] = _guard(lambda: _cuda_version(cupy.cuda.driver.get_build_version()))
    info["cuda_runtime_version"] = _guard(lambda: _cuda_version(cupy.cuda.runtime.runtimeGetVersion()))
    info["cuda_driver_version"] = _guard(lambda: _cuda_version(cupy.cuda.runtime.driverGetVersion()))
    info["nvrtc_version"] = _guard(lambda: ".".join(map(str, cupy.cuda.nvrtc.getVersion())))
    count = _guard(cupy.cuda.runtime.getDeviceCount)
    info["device_count"] = count
    if isinstance(count, int):
        info["devices"] = [_guard(lambda i=i: _device(cupy, i)) for i in range(count)]
        info["available"] = count > 0
        if count == 0:
            info["reason"] = "CuPy found no CUDA device"
    else:
        info["devices"] = []
        info["available"] = False
        info["reason"] = f"CUDA devices cannot be listed ({count}); is the NVIDIA driver installed?"
    return info


def _writable(root: Path) -> bool:
    """Can this process create files where the cache lives (or will live)?"""
    if root.is_dir():
        try:
            with tempfile.NamedTemporaryFile(dir=root, prefix=".doctor-"):
                return True
        except OSError:
            return False
    parent = root
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent.is_dir() and os.access(parent, os.W_OK | os.X_OK)


def probe_cache() -> Dict[str, Any]:
    from ..cache import cache_info
    from ..cache.layout import Layout, configured_base

    base = configured_base()
    root = Layout(base).root
    out: Dict[str, Any] = {"configured_dir": str(base), "dir": str(root), "writable": _writable(root)}
    if not out["writable"]:
        out["problem"] = ("this directory cannot be written: kernels go to a private temporary cache and are "
                          "rebuilt in every process; set HETEROSYMNN_CACHE_DIR to a writable directory")
    try:
        info = cache_info()
    except Exception as exc:  # e.g. the directory sits below a regular file
        out.update(size_bytes=None, entries=None, info_error=f"{type(exc).__name__}: {exc}")
        return out
    out.update({k: v for k, v in info.items() if k != "directory"})
    return out


def probe_env() -> Dict[str, Any]:
    from ..config import ENV_PREFIX, settings

    env: Dict[str, Any] = {k: v for k, v in sorted(os.environ.items()) if k.startswith(ENV_PREFIX)}
    for name in EXTRA_ENV:
        env[name] = os.environ.get(name)
    try:
        settings()
    except ValueError as exc:  # a malformed HETEROSYMNN_* value breaks every build
        env["settings_error"] = str(exc)
    return env
