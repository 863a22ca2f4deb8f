"""The doctor's report as plain ``Key : value`` text."""
from __future__ import annotations

from typing import Any, Dict, List

TITLES = (("platform", "Platform"), ("packages", "Packages"), ("toolchains", "Toolchains (C and CUDA)"),
          ("cuda", "CUDA"), ("cache", "Kernel cache"), ("env", "Environment"),
          ("backends", "Backends (live check)"), ("errors", "Probe errors"))


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(_value(v) for v in value) if value else "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_value(v)}" for k, v in value.items())
    return str(value)


def _pairs(pairs: List[tuple], indent: str = "  ") -> List[str]:
    """Aligned ``Key : value`` lines; continuation lines of a value are indented under it."""
    width = max((len(str(k)) for k, _ in pairs), default=0)
    lines = []
    for key, value in pairs:
        first, *rest = _value(value).splitlines() or [""]
        lines.append(f"{indent}{str(key).ljust(width)} : {first}")
        lines += [f"{indent}{' ' * width}   {line}" for line in rest]
    return lines


def _cuda_compiler_text(row: Dict[str, Any]) -> str:
    if not row.get("usable"):
        return f"not usable: {row.get('reason')}\nfix: {row.get('fix')}"
    archs = row.get("architectures") or []
    span = f"{archs[0]} ... {archs[-1]} ({len(archs)})" if archs else "architectures unknown"
    text = f"usable: {row.get('family')} {row.get('version')} at {row.get('path')} [{span}]"
    text += " (selected)" if row.get("selected") else ""
    return text + (f"\n{row['reason']}" if row.get("reason") else "")


def _toolchain_pairs(rows: List[Dict[str, Any]]) -> List[tuple]:
    pairs = []
    for row in rows:
        if row.get("kind") == "cuda":
            pairs.append((row.get("name"), _cuda_compiler_text(row)))
        elif row.get("usable"):
            omp = "OpenMP" if row.get("openmp") else "no OpenMP"
            head = f"usable: {row.get('family')} {row.get('version')} at {row.get('path')} [{row.get('isa')}, {omp}]"
            pairs.append((row["name"], head + (f"\n{row['reason']}" if row.get("reason") else "")))
        else:
            pairs.append((row.get("name"), f"not usable: {row.get('reason')}"))
    return pairs


def _backend_pairs(backends: Dict[str, Dict[str, Any]]) -> List[tuple]:
    pairs = []
    for name, row in backends.items():
        if row.get("ok"):
            pairs.append((name, f"PASS ({row.get('seconds'):.3f} s)"))
        else:
            pairs.append((name, f"FAIL: {row.get('reason')}"))
            pairs.append(("  fix", row.get("fix")))
        for note in row.get("warnings", ()):
            pairs.append(("  note", note))
    return pairs


def _cuda_pairs(cuda: Dict[str, Any]) -> List[tuple]:
    pairs = [(k, v) for k, v in cuda.items() if k not in ("devices", "compilers")]
    for name, row in (cuda.get("compilers") or {}).items():
        if isinstance(row, dict):
            what = (f"{row.get('version')} at {row.get('path')}, {len(row.get('architectures') or [])} "
                    f"architectures" if row.get("usable") else f"not usable: {row.get('reason')}")
            pairs.append((f"compiler {name}", what))
    for dev in cuda.get("devices", ()):
        if isinstance(dev, dict):
            pairs.append((f"device {dev.get('id')}", f"{dev.get('name')}, compute capability "
                          f"{dev.get('compute_capability')}, {(dev.get('memory_bytes') or 0) / 2**30:.1f} GiB"))
        else:
            pairs.append(("device", dev))
    return pairs


def render(info: Dict[str, Any]) -> str:
    """The report :func:`heterosymnn.doctor.collect` made, as text."""
    lines: List[str] = ["heterosymnn doctor"]
    for key, title in TITLES:
        section = info.get(key)
        lines += ["", title]
        if key == "errors":
            pairs = [(e.get("probe"), f"{e.get('error')}\n{e.get('traceback', '')}".rstrip())
                     for e in section or ()] or [("errors", "none")]
        elif isinstance(section, dict) and set(section) == {"error"}:
            pairs = [("error", section["error"])]
        elif key == "toolchains" and isinstance(section, list):
            pairs = _toolchain_pairs(section) or [("toolchains", "none detected")]
        elif key == "backends" and isinstance(section, dict):
            pairs = _backend_pairs(section)
        elif key == "cuda" and isinstance(section, dict):
            pairs = _cuda_pairs(section)
        elif isinstance(section, dict):
            pairs = list(section.items())
        else:
            pairs = [(key, section)]
        lines += _pairs(pairs)
    return "\n".join(lines) + "\n"
