"""Argument checks for the kernels: a wrong array is a clear TypeError/ValueError.

Kernels only ever see 2-D, C-contiguous arrays of the compiler's dtype; these
functions make that true (copying a non-contiguous input) or say exactly what
was expected.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np


def as_input(array: Any, name: str, dtype: np.dtype, xp: Any = np) -> Any:
    """Check type and dtype; return a C-contiguous array (a copy only if it was not)."""
    if not isinstance(array, xp.ndarray):
        kind = "a NumPy" if xp is np else "a CuPy"
        hint = ""
        if xp is not np and isinstance(array, np.ndarray):
            hint = "; this compiler runs on the GPU: move it with cupy.asarray(...)"
        elif xp is np and type(array).__module__.startswith("cupy"):
            hint = "; this compiler runs on the CPU: move it with .get() or build with GPU_CUDA"
        raise TypeError(f"{name} must be {kind} ndarray, got {type(array).__module__}."
                        f"{type(array).__name__}{hint}")
    if array.dtype != dtype:
        other = f" or build the compiler with dtype='{array.dtype.name}'" \
            if array.dtype.name in ("float32", "float64") and array.dtype.isnative else ""
        raise TypeError(
            f"{name} has dtype {array.dtype}, but this compiler was built for {dtype}; "
            f"convert with {name}.astype({xp.__name__}.{dtype}){other}")
    # ascontiguousarray would also turn a 0-d array into shape (1,): copy only when needed.
    return array if array.flags.c_contiguous else xp.ascontiguousarray(array)


def check_rows(array: Any, n_rows: int, name: str, elementwise: bool) -> None:
    """Check that ``array`` has one row per node: ``(n,)`` or ``(n, batch)`` (any shape for an
    element-wise loss). Kernels read node ``r`` as the ``r``-th contiguous block."""
    if elementwise:
        return
    if array.ndim not in (1, 2):
        raise ValueError(f"{name} must have shape ({n_rows},) or ({n_rows}, batch), "
                         f"got an array with {array.ndim} dimensions, shape {array.shape}")
    if array.shape[0] != n_rows:
        raise ValueError(f"{name} has {array.shape[0]} rows, but the layer has {n_rows} nodes; "
                         f"expected shape ({n_rows},) or ({n_rows}, batch) with nodes on axis 0")


def check_features(array: Any, n_features: int, name: str, elementwise: bool = False) -> None:
    """Check PyTorch's features-last layout: shape ``(..., n_nodes)``, node ``j`` owning ``[..., j]``."""
    if array.ndim == 0 or array.shape[-1] != n_features:
        got = "a 0-d array" if array.ndim == 0 else f"shape {array.shape}"
        raise ValueError(f"{name} must have shape (..., {n_features}) with features last (one feature "
                         f"per node), got {got}; for nodes on axis 0 leave features_last=False")


def same_shape(first: Any, second: Any, first_name: str, second_name: str) -> None:
    if first.shape != second.shape:
        raise ValueError(f"{second_name} has shape {second.shape}, but {first_name} has shape "
                         f"{first.shape}; they must match")


def output(out: Optional[Any], shape: Tuple[int, ...], dtype: np.dtype, inputs: Tuple[Any, ...],
           xp: Any = np, empty: Any = None) -> Tuple[Any, bool]:
    """Check a caller's ``out`` (or allocate one); says whether inputs must be copied first.

    Returns the output array and whether it overlaps an input in a way other
    than being exactly the same buffer (an element-wise kernel may write in
    place, but a shifted overlap would read already-written values).
    """
    if out is None:
        return (empty or xp.empty)(shape, dtype=dtype), False
    if not isinstance(out, xp.ndarray):
        raise TypeError(f"out must be a {'NumPy' if xp is np else 'CuPy'} ndarray, got {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"out has dtype {out.dtype}, expected {dtype}")
    if out.shape != shape:
        raise ValueError(f"out has shape {out.shape}, expected {shape} (the shape of the input)")
    if not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous; pass a new array or numpy.ascontiguousarray(out)")
    if not out.flags.writeable:
        raise ValueError("out is read-only; pass a writeable array")
    overlap = any(partial_overlap(out, a, xp) for a in inputs)
    return out, overlap


def partial_overlap(out: Any, array: Any, xp: Any) -> bool:
    """Whether ``out`` shares memory with ``array`` other than being exactly the same array
    (same start, shape and C-contiguous layout): element-wise kernels may write such an
    ``out`` in place, but not one that overlaps part of an input."""
    if not xp.may_share_memory(out, array):
        return False
    same = (array.flags.c_contiguous and array.shape == out.shape
            and _data_pointer(array) == _data_pointer(out))
    return not same


def _data_pointer(array: Any) -> int:
    interface = getattr(array, "__array_interface__", None) or array.__cuda_array_interface__
    return interface["data"][0]
