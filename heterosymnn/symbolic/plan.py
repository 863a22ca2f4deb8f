"""What the kernels need at run time, as plain data (no SymPy).

A :class:`LayerPlan` says which structure each node uses and with which
constants. It is JSON-serialisable so that a warm start can rebuild it from
the cache without importing SymPy.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Tuple

import numpy as np


@dataclasses.dataclass(frozen=True)
class LayerPlan:
    mode: str
    structure_keys: Tuple[str, ...]
    """Distinct structures, in order of first use."""
    structure_slots: Tuple[int, ...]
    """Number of parameter slots of each structure."""
    node_structure: Tuple[int, ...]
    """Per node: index into ``structure_keys``."""
    node_slot_names: Tuple[Tuple[str, ...], ...]
    """Per node: the constant name bound to each slot of its structure."""
    node_values: Tuple[Tuple[float, ...], ...]
    """Per node: initial slot values (the node's dict, else named-formula defaults)."""

    @property
    def n_nodes(self) -> int:
        return len(self.node_structure)

    @property
    def max_slots(self) -> int:
        return max(self.structure_slots, default=0)

    @property
    def n_constants(self) -> int:
        """How many constants the layer has, all nodes together."""
        return sum(len(names) for names in self.node_slot_names)

    @property
    def constant_names(self) -> Tuple[Tuple[int, str], ...]:
        """``(node, name)`` of every constant: node by node, a node's in slot order."""
        return tuple((node, name) for node, names in enumerate(self.node_slot_names) for name in names)

    def constant_offsets(self) -> np.ndarray:
        """Per node, where its constants start in :attr:`constant_names` (int64, ``n_nodes + 1``)."""
        counts = [len(names) for names in self.node_slot_names]
        return np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64)

    def initial_params(self) -> np.ndarray:
        """``(n_nodes, max(1, max_slots))`` float64 matrix of slot values."""
        params = np.zeros((self.n_nodes, max(1, self.max_slots)), dtype=np.float64)
        for row, values in enumerate(self.node_values):
            params[row, :len(values)] = values
        return params

    def nodes_of(self, structure_index: int) -> np.ndarray:
        """Indices of the nodes using one structure."""
        return np.flatnonzero(np.asarray(self.node_structure) == structure_index)

    def to_json(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "LayerPlan":
        return cls(
            mode=data["mode"],
            structure_keys=tuple(data["structure_keys"]),
            structure_slots=tuple(data["structure_slots"]),
            node_structure=tuple(data["node_structure"]),
            node_slot_names=tuple(tuple(n) for n in data["node_slot_names"]),
            node_values=tuple(tuple(v) for v in data["node_values"]),
        )
