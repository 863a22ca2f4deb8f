"""The activation kernels of CPU_JIT as users call them: everything bound once, checks in a few tests.

On a small layer (32 nodes x batch 1) the C work is a few hundred nanoseconds, so
every attribute lookup, keyword, Python call and array check of a call shows.
These kernels take the common call whole in one Python function: an input that
is a C-contiguous ndarray of the layer's dtype with one row per node, views
included, and ``out`` absent, a distinct array, or an input itself (rows are
element-wise, so in place is safe). Anything else, and every ``features_last`` or
``constants_grad`` call, goes to the compiler's checked path, which also writes
the error messages. A partial overlap of ``out`` and an input is found by the
driver from the pointers; the call then runs again on copies of the inputs.

The driver's entry is ``hs_call_*`` (:mod:`heterosymnn.codegen.c_calls`): six
arguments, the rest in a layer record prepared once per set of constants.
Contiguity and writeability come for free from ``ffi.from_buffer``: NumPy refuses
a plain buffer of a non-contiguous array and, when asked for a writeable one, of
a read-only array (both a ``ValueError``). The layer records (which point at the
constants) are read once per call, as one tuple (see
``CffiKernels.update_params``), so a call on another thread uses one whole set of
constants, old or new.
"""
from __future__ import annotations

from typing import Any, Callable, Tuple

import numpy as np

#: What ``ffi.from_buffer`` raises for an array it cannot hand over as it is.
_REFUSED = (ValueError, BufferError)


def bind_kernels(kernels: Any, dtype: str, checked_forward: Callable[..., Any],
                 checked_backward: Callable[..., Any]) -> Tuple[Callable[..., Any], Callable[..., Any]]:
    """``(forward_kernel, backward_kernel)`` of a ``CffiKernels`` of an activation layer.

    Same signatures and results as the compiler's; ``checked_*`` are its checked paths.
    """
    ffi = kernels._ffi
    # hs_call_* takes void pointers: a plain buffer (char[]) needs no type looked up.
    from_buffer, chars, null = ffi.from_buffer, ffi.typeof("char[]"), ffi.NULL
    call, rows = kernels._call, kernels._rows
    ndarray, empty = np.ndarray, np.empty
    dtype_ = np.dtype(dtype)  # builtin dtypes are singletons: ``is`` is the cheapest test

    def forward_kernel(z: Any, out: Any = None, *, features_last: bool = False) -> Any:
        if features_last is False and type(z) is ndarray and z.dtype is dtype_:
            shape = z.shape
            ndim = len(shape)
            if (ndim == 2 or ndim == 1) and shape[0] == rows:
                try:
                    if out is None:
                        a = from_buffer(z)
                        out = empty(shape, dtype_)
                        o = from_buffer(out)
                    elif out is z:
                        a = o = from_buffer(chars, z, True)
                    elif type(out) is ndarray and out.dtype is dtype_ and out.shape == shape:
                        a = from_buffer(z)
                        o = from_buffer(chars, out, True)
                    else:
                        a = None
                except _REFUSED:
                    a = None
                if a is not None:
                    # A local: the tuple keeps the constants alive while the C function runs,
                    # whatever another thread stores in kernels._layers meanwhile.
                    layers = kernels._layers
                    if call(layers[0], shape[1] if ndim == 2 else 1, a, null, null, o):
                        kernels.forward(z.copy(), None, out)  # overlap: the driver wrote nothing
                    return out
        return checked_forward(z, out, features_last=features_last)

    def backward_kernel(z: Any, grad: Any, out: Any = None, *, constants_grad: Any = None,
                        features_last: bool = False) -> Any:
        if constants_grad is None and features_last is False and type(z) is ndarray and z.dtype is dtype_ \
                and type(grad) is ndarray and grad.dtype is dtype_:
            shape = z.shape
            ndim = len(shape)
            if (ndim == 2 or ndim == 1) and shape[0] == rows and grad.shape == shape:
                try:
                    if out is None:
                        a, g = from_buffer(z), from_buffer(grad)
                        out = empty(shape, dtype_)
                        o = from_buffer(out)
                    elif out is grad:
                        a = from_buffer(chars, z, z is grad)
                        g = o = from_buffer(chars, grad, True)
                    elif out is z:
                        a = o = from_buffer(chars, z, True)
                        g = from_buffer(grad)
                    elif type(out) is ndarray and out.dtype is dtype_ and out.shape == shape:
                        a, g = from_buffer(z), from_buffer(grad)
                        o = from_buffer(chars, out, True)
                    else:
                        a = None
                except _REFUSED:
                    a = None
                if a is not None:
                    layers = kernels._layers  # kept alive while the C function runs
                    if call(layers[1], shape[1] if ndim == 2 else 1, a, null, g, o):
                        kernels.backward(z.copy(), grad.copy(), out)  # overlap: the driver wrote nothing
                    return out
        return checked_backward(z, grad, out, constants_grad=constants_grad, features_last=features_last)

    forward_kernel.__doc__ = "``f_j(z[j])`` row by row (see SymbolicJITCompiler)."
    backward_kernel.__doc__ = "``grad * f_j'(z)`` row by row (see SymbolicJITCompiler)."
    return forward_kernel, backward_kernel
