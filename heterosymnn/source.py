"""``render_source``: the code a layer compiles to, for reading and debugging."""
from __future__ import annotations

from typing import Any, Sequence

TARGETS = ("python", "c", "cuda")


def render_source(configs: Sequence[Any], target: str = "c", mode: str = "activation",
                  dtype: str = "float32") -> str:
    """Return the source generated for ``configs``.

    Parameters
    ----------
    configs : list
        Node configs, as for :class:`SymbolicJITCompiler`.
    target : {"c", "cuda", "python"}
        Which backend's code to show.
    mode, dtype
        As for :class:`SymbolicJITCompiler`.
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    from .symbolic.layer import analyze

    layer = analyze(configs, mode)
    if target == "python":
        from .backends.python import numpy_source

        blocks = []
        for index, structure in enumerate(layer.structures):
            slots = f"slots p0..p{structure.n_slots - 1}" if structure.n_slots else "no constants"
            blocks.append(f"# structure {index} ({structure.key[:16]}), {slots}\n"
                          f"forward = {numpy_source(structure)}\n"
                          f"derivative = {numpy_source(structure, derivative=True)}\n")
        return "\n".join(blocks)
    if target == "c":
        from .codegen.c_runtime import render_runtime
        from .codegen.c_source import render_c

        runtime = render_runtime(dtype)
        return (render_c(layer.structures, dtype)
                + "\n\n/* ---- layer driver (built once per dtype and shared by every layer) ---- */\n"
                + runtime.source)
    from .codegen.cuda_source import render_cuda

    return render_cuda(layer.structures, dtype)
