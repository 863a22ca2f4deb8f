"""Tensors to kernel arrays and back, without copies: NumPy views on the CPU, CuPy through DLPack.

A CUDA call runs inside :func:`device_context`: CuPy's current device and stream
become PyTorch's current ones, so the kernels (and the constants' upload) are
queued on the stream PyTorch uses and need no synchronisation.
"""
from __future__ import annotations

import contextlib
from typing import Any, ContextManager, Iterator, Optional

import torch


def array(tensor: torch.Tensor) -> Any:
    """A NumPy (CPU) or CuPy (CUDA) view of ``tensor``; a contiguous copy only if it is not contiguous."""
    tensor = tensor.detach()
    if not tensor.is_contiguous():
        tensor = tensor.contiguous()  # e.g. the stride-0 gradient of a sum or mean
    if tensor.device.type == "cpu":
        return tensor.numpy()
    return _cupy().from_dlpack(tensor)


def output(like: torch.Tensor, dtype: Optional[torch.dtype] = None, shape: Any = None) -> torch.Tensor:
    """A new contiguous tensor of ``like``'s shape (or ``shape``) on ``like``'s device."""
    return torch.empty(like.shape if shape is None else shape, dtype=dtype or like.dtype, device=like.device)


_NOTHING = contextlib.nullcontext()


def device_context(device: torch.device) -> ContextManager[None]:
    """CuPy's current device and stream set to PyTorch's for ``device`` (nothing on the CPU)."""
    return _NOTHING if device.type != "cuda" else _cuda_context(device)


@contextlib.contextmanager
def _cuda_context(device: torch.device) -> Iterator[None]:
    cupy = _cupy()
    index = device.index if device.index is not None else torch.cuda.current_device()
    stream = torch.cuda.current_stream(index)
    with cupy.cuda.Device(index), cupy.cuda.ExternalStream(stream.cuda_stream, index):
        yield


def _cupy() -> Any:
    try:
        import cupy
    except ImportError as exc:  # pragma: no cover - needs a CUDA machine without CuPy
        raise ImportError("CUDA tensors need CuPy for heterosymnn's GPU_CUDA kernels: "
                          "pip install 'heterosymnn[gpu]' (or a cupy-cudaXXx matching your CUDA)") from exc
    return cupy
