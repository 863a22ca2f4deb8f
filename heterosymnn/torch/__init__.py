"""PyTorch layers over heterosymnn's kernels: :class:`HeteroActivation` and :class:`HeteroLoss`.

Needs PyTorch (``pip install 'heterosymnn[torch]'``); ``import heterosymnn``
alone never imports it. The kernels run as the custom operators
``torch.ops.heterosymnn.activation`` and ``torch.ops.heterosymnn.loss`` (see
:mod:`heterosymnn.torch.ops`), so eager mode, ``torch.compile(fullgraph=True)``
and ``torch.library.opcheck`` all work; every node's constants are one
trainable vector.

>>> import torch
>>> from heterosymnn.torch import HeteroActivation
>>> layer = HeteroActivation(["relu", ("a*sin(w*num)", {"a": 1.0, "w": 3.0}), "tanh"])
>>> y = layer(torch.randn(32, 3))
"""
from __future__ import annotations

try:
    import torch.library as _library  # noqa: F401  (not just ``torch``: a stray ``torch`` folder on sys.path)
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError("heterosymnn.torch needs PyTorch: pip install 'heterosymnn[torch]'") from exc

from .activation import HeteroActivation
from .loss import HeteroLoss

__all__ = ["HeteroActivation", "HeteroLoss"]
