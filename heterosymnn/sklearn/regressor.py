"""HeteroMLPRegressor: a scikit-learn regressor whose hidden neurons each have their own formula."""
from __future__ import annotations

from typing import Any, Callable, Tuple

import numpy as np
import torch
from sklearn.base import RegressorMixin
from sklearn.metrics import r2_score

from ..torch import HeteroLoss
from ._base import HeteroMLPBase
from ._compat import validate_data
from ._spec import DEFAULT_ACTIVATION, node_config
from ._training import LossFn


class HeteroMLPRegressor(RegressorMixin, HeteroMLPBase):
    """Multi-layer perceptron regressor with one activation formula per hidden neuron.

    Trains through :class:`heterosymnn.torch.HeteroActivation` (the formulas run as
    compiled kernels, their constants learn with the weights). The output layer is
    linear; the loss is the mean squared error, or any loss formula (``loss=``).

    Parameters
    ----------
    hidden_layers : int or sequence, default=(64, 64)
        One entry per hidden layer: a number of nodes (their formulas come from
        ``activation``), or a list of node configs, one per node (``"relu"``,
        ``("a*sin(w*num)", {"a": 1.0, "w": 3.0})``).
    activation : str, (str, dict) or sequence of them, default: swish, sin(w*num), tanh(b*num)
        The formula(s) of the layers given as sizes, cycled over each layer's nodes.
        Constants may be a dict or a tuple of ``(name, value)`` pairs.
    learn_constants : bool or set of str, default=True
        Which formula constants learn: all, none, or those named (the others stay fixed).
    loss : None, str or (str, dict), default=None
        None: mean squared error. Otherwise a loss formula over ``y_pred`` and
        ``y_true`` (``"huber"``, ``("quantile", {"tau": 0.9})``), averaged over
        samples and outputs; its constants stay fixed. With ``normalize_y`` it sees
        standardised targets.
    normalize_y : bool, default=True
        Train on targets standardised per output (mean 0, standard deviation 1, from
        the first ``fit``/``partial_fit`` call's data); predictions are mapped back.
    solver : {"adam", "sgd"}, default="adam"
    learning_rate_init : float, default=0.01
    alpha : float, default=0.0001
        L2 penalty: weight decay of the Linear layers' weights (not of biases or constants).
    batch_size : int or "auto", default="auto"
        ``"auto"``: ``min(200, n_samples)``.
    max_iter : int, default=200
        Maximum number of epochs of ``fit`` (``partial_fit`` runs one).
    shuffle : bool, default=True
    random_state : int, RandomState or None, default=None
        Seeds the weights, the shuffling and the validation split (through a
        ``torch.Generator`` per fit; PyTorch's global RNG is not used).
    tol : float, default=1e-4
    momentum : float, default=0.9
        SGD's momentum.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the data and stop when its score has not
        improved by ``tol`` for ``n_iter_no_change`` epochs; keep the best epoch. The
        score is R^2 with the default loss, minus the validation loss with a ``loss``
        formula.
    validation_fraction : float, default=0.1
    n_iter_no_change : int, default=10
    calculation_method : {"AUTO", "CPU_JIT", "CPU_PYTHON", "GPU_CUDA"}, default="AUTO"
        As for :class:`heterosymnn.torch.HeteroActivation`; ``"GPU_CUDA"`` trains on the GPU.
    dtype : {"float32", "float64"}, default="float32"
    verbose : bool, default=False
        A progress bar over the epochs, on standard error.
    n_threads : int or None, default=1
        PyTorch's intra-op threads while fitting and predicting (restored afterwards;
        the setting is process-wide meanwhile). One is fastest for networks of this
        size: several spin against the kernels' OpenMP threads. None: leave it alone.

    Attributes
    ----------
    network_ : torch.nn.Sequential
        The fitted network (Linear, HeteroActivation, ..., Linear).
    learned_constants_ : list of list of dict
        Per hidden layer, per node, ``{constant name: value}`` after fitting.
    n_features_in_, feature_names_in_, n_outputs_, n_iter_, t_, loss_, loss_curve_, best_loss_,
    validation_scores_, best_validation_score_
        As for :class:`sklearn.neural_network.MLPRegressor` (losses on the
        normalised scale when ``normalize_y``).

    Examples
    --------
    >>> from sklearn.datasets import make_friedman1
    >>> X, y = make_friedman1(n_samples=500, random_state=0)
    >>> model = HeteroMLPRegressor(hidden_layers=(16,), max_iter=50, random_state=0).fit(X, y)
    >>> model.predict(X[:2]).shape
    (2,)
    """

    def __init__(self, hidden_layers: Any = (64, 64), activation: Any = DEFAULT_ACTIVATION, *,
                 learn_constants: Any = True, loss: Any = None, normalize_y: bool = True, solver: str = "adam",
                 learning_rate_init: float = 0.01, alpha: float = 0.0001, batch_size: Any = "auto",
                 max_iter: int = 200, shuffle: bool = True, random_state: Any = None, tol: float = 1e-4,
                 momentum: float = 0.9, early_stopping: bool = False, validation_fraction: float = 0.1,
                 n_iter_no_change: int = 10, calculation_method: str = "AUTO", dtype: str = "float32",
                 verbose: bool = False, n_threads: Any = 1):
        self.hidden_layers = hidden_layers
        self.activation = activation
        self.learn_constants = learn_constants
        self.loss = loss
        self.normalize_y = normalize_y
        self.solver = solver
        self.learning_rate_init = learning_rate_init
        self.alpha = alpha
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.momentum = momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.calculation_method = calculation_method
        self.dtype = dtype
        self.verbose = verbose
        self.n_threads = n_threads

    def fit(self, X: Any, y: Any) -> "HeteroMLPRegressor":
        """Train a new network on ``X`` (n_samples, n_features) and ``y`` (n_samples,) or (n_samples, n_outputs)."""
        return self._fit(X, y, incremental=False)

    def partial_fit(self, X: Any, y: Any) -> "HeteroMLPRegressor":
        """One epoch over ``(X, y)``; the first call builds the network, later ones continue training it."""
        return self._fit(X, y, incremental=True)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted targets: shape (n_samples,) when fitted on a 1-D ``y``, else (n_samples, n_outputs)."""
        out = self._raw_output(X) * self._y_scale + self._y_mean
        return out.ravel() if self._y_1d else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    # -- hooks -------------------------------------------------------------------------
    def _validate_targets(self, X: Any, y: Any, reset: bool, incremental: bool,
                          classes: Any) -> Tuple[np.ndarray, np.ndarray]:
        X, y = validate_data(self, X, y, reset=reset, dtype=(np.float64, np.float32), multi_output=True,
                             y_numeric=True)
        if not reset and (1 if y.ndim == 1 else y.shape[1]) != self.n_outputs_:
            raise ValueError(f"y has {1 if y.ndim == 1 else y.shape[1]} output(s), but this regressor was fitted on "
                             f"{self.n_outputs_}: pass targets with as many outputs as the first call's")
        return X, y

    def _prepare_targets(self, y: np.ndarray, reset: bool) -> np.ndarray:
        y2 = np.asarray(y, dtype=np.float64).reshape(y.shape[0], -1)
        if reset:
            self._y_1d = y.ndim == 1
            self.n_outputs_ = y2.shape[1]
            if self.normalize_y:
                scale = y2.std(axis=0)
                self._y_mean, self._y_scale = y2.mean(axis=0), np.where(scale > 0, scale, 1.0)
            else:
                self._y_mean, self._y_scale = np.zeros(y2.shape[1]), np.ones(y2.shape[1])
        return (y2 - self._y_mean) / self._y_scale

    def _n_outputs(self) -> int:
        return self.n_outputs_

    def _loss_function(self) -> LossFn:
        if self.loss is None or self.loss == "mse":
            return torch.nn.functional.mse_loss
        if not hasattr(self, "_loss_module") or self._loss_config != self.loss:
            self._loss_module = HeteroLoss(node_config(self.loss, "loss"), trainable=False,
                                           method=self.calculation_method, dtype=self._torch_dtype())
            self._loss_module.to(self._device())
            self._loss_config = self.loss
        return self._loss_module

    def _validation_score(self, x: torch.Tensor, targets: torch.Tensor, y: np.ndarray) -> Callable[[], float]:
        if self.loss is None or self.loss == "mse":
            def score() -> float:  # R^2, as MLPRegressor
                out = self._forward(x) * self._y_scale + self._y_mean
                return float(r2_score(y, out.ravel() if self._y_1d else out))
            return score
        loss = self._loss_function()

        def negative_loss() -> float:  # R^2 means nothing to a quantile or robust loss: its own value does
            self.network_.eval()
            with torch.no_grad():
                return -float(loss(self.network_(x), targets))
        return negative_loss
