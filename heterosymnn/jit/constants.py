"""Every constant of a layer as one flat vector: its order, reading, writing, and its gradient.

Training needs the constants as one parameter vector (``comp.constant_names``
order: node by node, a node's constants in slot order) and their gradient in
the same order. The kernels keep constants as an ``(n_nodes, slots)`` matrix;
this module maps between the two and checks what users hand in.
"""
from __future__ import annotations

import numbers
from typing import Any, Tuple

import numpy as np

from ..symbolic.plan import LayerPlan


class ConstantsLayout:
    """Where each entry of the flat constants vector lives in the ``(n_nodes, slots)`` matrix."""

    def __init__(self, plan: LayerPlan):
        self.names: Tuple[Tuple[int, str], ...] = plan.constant_names
        self._rows = np.array([node for node, _ in self.names], dtype=np.intp)
        self._slots = np.array([plan.node_slot_names[node].index(name) for node, name in self.names],
                               dtype=np.intp)

    def __len__(self) -> int:
        return len(self.names)

    def vector(self, params: np.ndarray) -> np.ndarray:
        """The constants of ``params`` as a new 1-D float64 vector."""
        return params[self._rows, self._slots].astype(np.float64)

    def write(self, params: np.ndarray, values: np.ndarray) -> None:
        """Store ``values`` (checked by :meth:`checked_values`) into ``params`` in place."""
        params[self._rows, self._slots] = values

    def checked_values(self, values: Any) -> np.ndarray:
        """``values`` as a float64 vector of the right length, or a clear error."""
        if hasattr(values, "__cuda_array_interface__") and hasattr(values, "get"):
            values = values.get()  # a CuPy vector: the constants live on the host
        elif type(values).__module__.startswith("torch"):
            values = values.detach().cpu().numpy()
        if isinstance(values, (str, bytes)) or isinstance(values, numbers.Number):
            raise TypeError(f"values must be a 1-D sequence of {len(self)} numbers (comp.constant_names "
                            f"order), got {type(values).__name__} {values!r:.60}")
        array = np.asarray(values)
        if array.dtype.kind not in "iuf":
            raise TypeError(f"values must be real numbers, got an array of dtype {array.dtype}")
        if array.shape != (len(self),):
            raise ValueError(f"values has shape {array.shape}, but this layer has {len(self)} constants: "
                             f"expected shape ({len(self)},), in comp.constant_names order")
        array = array.astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(array))
        if bad.size:
            node, name = self.names[bad[0]]
            raise ValueError(f"values[{bad[0]}] (node {node}, constant '{name}') is {array[bad[0]]}: "
                             f"every constant must be a finite real number ({bad.size} are not)")
        return array

    def check_grad(self, constants_grad: Any, xp: Any) -> None:
        """Check a caller's ``constants_grad`` output vector (the kernels overwrite it)."""
        library = "NumPy" if xp is np else "CuPy"
        if not isinstance(constants_grad, xp.ndarray):
            raise TypeError(f"constants_grad must be a {library} ndarray (the array library of this "
                            f"compiler's backend, comp.array_module), got "
                            f"{type(constants_grad).__module__}.{type(constants_grad).__name__}")
        if constants_grad.dtype != np.float64:
            raise TypeError(f"constants_grad has dtype {constants_grad.dtype}; it must be float64 "
                            f"(gradients of constants are accumulated in float64): "
                            f"{library.lower()}.zeros({len(self)})")
        if constants_grad.shape != (len(self),):
            raise ValueError(f"constants_grad has shape {constants_grad.shape}, but this layer has "
                             f"{len(self)} constants: expected shape ({len(self)},), in comp.constant_names order")
        if not constants_grad.flags.c_contiguous or not constants_grad.flags.writeable:
            raise ValueError("constants_grad must be a writeable, contiguous array")
