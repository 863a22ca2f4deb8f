"""scikit-learn version differences, in one place (the extra allows scikit-learn >= 1.3)."""
from __future__ import annotations

from typing import Any

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data
except ImportError:  # pragma: no cover - older scikit-learn: the same checks as a private method
    def validate_data(estimator: Any, *args: Any, **kwargs: Any) -> Any:
        return estimator._validate_data(*args, **kwargs)

__all__ = ["validate_data"]
