"""What every backend hands the compiler: a :class:`Kernels` object.

Arrays reaching a backend are already checked by the compiler: C-contiguous,
all of one shape, of the compiler's dtype, on the right device, not empty, and
``out`` never overlaps the inputs. Their ``size`` is a multiple of the layer's
node count; node ``r`` owns the ``r``-th contiguous block (a 1-D ``(n,)``
array is ``n`` rows of one element; a single-config loss is one row).
"""
from __future__ import annotations

from typing import Any, Optional, Protocol

CPU_PYTHON = "CPU_PYTHON"
CPU_JIT = "CPU_JIT"
GPU_CUDA = "GPU_CUDA"
AUTO = "AUTO"
METHODS = (GPU_CUDA, CPU_JIT, CPU_PYTHON, AUTO)


class Kernels(Protocol):
    method: str
    """The backend name (one of CPU_PYTHON, CPU_JIT, GPU_CUDA)."""
    array_module: Any
    """The array library its arrays come from (numpy or cupy)."""

    def forward(self, a: Any, b: Optional[Any], out: Any, features_last: bool = False) -> None:
        """Activation: ``out = f(a)``; loss: ``out = L(a, b)``.

        ``features_last``: node ``r`` owns ``a[i*n_nodes + r]`` for every sample ``i``
        (PyTorch's ``(..., n_nodes)`` layout) instead of the ``r``-th contiguous block.
        """

    def backward(self, a: Any, b: Any, out: Any, constants_grad: Optional[Any] = None,
                 features_last: bool = False, grad: Optional[Any] = None) -> None:
        """Activation: ``out = b * f'(a)`` (``b`` is the incoming gradient); loss: ``dL/da``,
        or ``grad * dL/da`` with ``grad`` (a loss's upstream gradient, checked like ``a``,
        never partly overlapping ``out``; activations never get it).

        With ``constants_grad`` (float64, one entry per constant in the plan's
        ``constant_names`` order), also overwrite it, in the same pass, with each
        node's sum of ``b * df/dc`` (loss: ``dL/dc``, or ``grad * dL/dc``), in a fixed order.
        """

    def update_params(self, params: Any) -> None:
        """New ``(n_nodes, slots)`` float64 constants; must not recompile anything."""
