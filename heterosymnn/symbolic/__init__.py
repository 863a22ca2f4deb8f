"""Text -> expression: safe parser, named formulas, constant slots, derivatives, structure keys."""
from .layer import AnalyzedLayer, analyze
from .plan import LayerPlan
from .structure import ACTIVATION, LOSS, MODES, Structure

__all__ = ["ACTIVATION", "LOSS", "MODES", "AnalyzedLayer", "LayerPlan", "Structure", "analyze"]
