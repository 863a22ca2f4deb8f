"""Formulas, inputs and helpers shared by the PyTorch layer tests."""
from __future__ import annotations

import numpy as np
import torch
# Written-out formulas with constants, shared with the core's constants-gradient tests.
from corpus import LOSSES_WITH_CONSTANTS as LOSSES  # noqa: F401
from corpus import WITH_CONSTANTS  # noqa: F401

from heterosymnn.symbolic.named_table import NAMED

METHODS = ["CPU_PYTHON", "CPU_JIT"]
NAMED_ACTIVATIONS = sorted(name for name, formula in NAMED.items() if formula.kind == "activation")
NAMED_LOSSES = sorted(name for name, formula in NAMED.items() if formula.kind == "loss")

# Where some formula above has a kink (relu, Abs, Max, Piecewise, hard_tanh, huber's delta).
KINKS = (0.0, 1.0, -1.0, 0.1, 0.2, 0.3, 0.7, -0.7)


def away_from_kinks(shape, seed: int = 0, low: float = -2.0, high: float = 2.0, margin: float = 0.03) -> np.ndarray:
    """Random float64 values in [low, high], none within ``margin`` of a kink."""
    values = np.random.default_rng(seed).uniform(low, high, size=shape)
    for _ in range(3):
        for kink in KINKS:
            near = np.abs(values - kink) < margin
            values[near] = kink + np.where(values[near] >= kink, 2, -2) * margin
    return values


def tensor(values: np.ndarray, dtype=torch.float64, requires_grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype, requires_grad=requires_grad)
