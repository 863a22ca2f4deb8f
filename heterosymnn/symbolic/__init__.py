"""Text -> expression: safe parser, named formulas, constant slots, derivatives, structure keys.

Importing this package does not import SymPy; the modules that need it
(``layer``, ``parser``, ``structure`` ...) do, so a warm start that only needs
``plan`` and ``modes`` stays light.
"""
from .modes import ACTIVATION, LOSS, MODES

__all__ = ["ACTIVATION", "LOSS", "MODES"]
