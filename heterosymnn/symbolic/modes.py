"""Layer modes and their variable names (no SymPy, so a warm start stays light)."""
from __future__ import annotations

ACTIVATION = "activation"
LOSS = "loss"
MODES = (ACTIVATION, LOSS)

VARIABLE_NAMES = {
    ACTIVATION: ("num",),
    LOSS: ("y_pred", "y_true"),
}
