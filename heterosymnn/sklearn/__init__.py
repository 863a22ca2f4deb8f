"""scikit-learn estimators whose hidden neurons each have their own activation formula.

Needs scikit-learn and PyTorch (``pip install 'heterosymnn[sklearn]'``);
``import heterosymnn`` alone imports neither. The estimators follow
scikit-learn's conventions (``fit``/``partial_fit``/``predict``/``score``,
``get_params``/``set_params``, pickling) and train through
:class:`heterosymnn.torch.HeteroActivation`, so each formula's constants learn
with the weights.

>>> from heterosymnn.sklearn import HeteroMLPRegressor
>>> model = HeteroMLPRegressor(hidden_layers=[["relu", ("a*sin(w*num)", {"a": 1.0, "w": 2.0})], 8])
"""
from __future__ import annotations

try:
    import torch.library  # noqa: F401  (not just ``torch``: a stray ``torch`` folder on sys.path)
    import sklearn.base  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("heterosymnn.sklearn needs scikit-learn and PyTorch: pip install 'heterosymnn[sklearn]' "
                      f"({exc})") from exc

from .classifier import HeteroMLPClassifier
from .regressor import HeteroMLPRegressor

__all__ = ["HeteroMLPClassifier", "HeteroMLPRegressor"]
