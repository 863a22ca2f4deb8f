"""HeteroMLPClassifier: a scikit-learn classifier whose hidden neurons each have their own formula."""
from __future__ import annotations

from typing import Any, Callable, Tuple

import numpy as np
import torch
from scipy.special import expit, softmax
from sklearn.base import ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets

from ._base import HeteroMLPBase
from ._compat import validate_data
from ._spec import DEFAULT_ACTIVATION
from ._training import LossFn


class HeteroMLPClassifier(ClassifierMixin, HeteroMLPBase):
    """Multi-layer perceptron classifier with one activation formula per hidden neuron.

    Two classes: one output, a sigmoid and binary cross-entropy; more: one output per
    class, a softmax and cross-entropy. Labels may be any sortable values (strings
    included). The other parameters are those of :class:`HeteroMLPRegressor` except
    ``loss`` and ``normalize_y``.

    Parameters
    ----------
    hidden_layers, activation, learn_constants, solver, learning_rate_init, alpha, batch_size,
    max_iter, shuffle, random_state, tol, momentum, validation_fraction, n_iter_no_change,
    calculation_method, dtype, verbose, n_threads
        See :class:`HeteroMLPRegressor`.
    early_stopping : bool, default=False
        Hold out a stratified ``validation_fraction`` of the data and stop when its
        accuracy has not improved by ``tol`` for ``n_iter_no_change`` epochs.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels, sorted.
    network_, learned_constants_, n_features_in_, n_outputs_, n_iter_, loss_curve_, ...
        As for :class:`HeteroMLPRegressor`.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> X, y = load_iris(return_X_y=True)
    >>> model = HeteroMLPClassifier(hidden_layers=(8,), max_iter=50, random_state=0).fit(X, y)
    >>> model.predict_proba(X[:1]).shape
    (1, 3)
    """

    _stratify = True

    def __init__(self, hidden_layers: Any = (64, 64), activation: Any = DEFAULT_ACTIVATION, *,
                 learn_constants: Any = True, solver: str = "adam", learning_rate_init: float = 0.01,
                 alpha: float = 0.0001, batch_size: Any = "auto", max_iter: int = 200, shuffle: bool = True,
                 random_state: Any = None, tol: float = 1e-4, momentum: float = 0.9, early_stopping: bool = False,
                 validation_fraction: float = 0.1, n_iter_no_change: int = 10, calculation_method: str = "AUTO",
                 dtype: str = "float32", verbose: bool = False, n_threads: Any = 1):
        self.hidden_layers = hidden_layers
        self.activation = activation
        self.learn_constants = learn_constants
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

    def fit(self, X: Any, y: Any) -> "HeteroMLPClassifier":
        """Train a new network on ``X`` (n_samples, n_features) and labels ``y`` (n_samples,)."""
        return self._fit(X, y, incremental=False)

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> "HeteroMLPClassifier":
        """One epoch over ``(X, y)``; the first call needs ``classes``, every label there may be."""
        return self._fit(X, y, incremental=True, classes=classes)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape (n_samples, n_classes), columns in ``classes_`` order; rows sum to 1."""
        out = self._raw_output(X)
        if out.shape[1] == 1:
            positive = expit(out[:, 0])
            return np.column_stack((1.0 - positive, positive))
        return softmax(out, axis=1)

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """The logarithm of :meth:`predict_proba`."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each sample."""
        out = self._raw_output(X)
        index = (out[:, 0] > 0).astype(np.intp) if out.shape[1] == 1 else out.argmax(axis=1)
        return self.classes_[index]

    # -- hooks -------------------------------------------------------------------------
    def _validate_targets(self, X: Any, y: Any, reset: bool, incremental: bool,
                          classes: Any) -> Tuple[np.ndarray, np.ndarray]:
        X, y = validate_data(self, X, y, reset=reset, dtype=(np.float64, np.float32))
        check_classification_targets(y)
        if reset:
            if classes is None and incremental:
                raise ValueError("classes must be passed on the first call to partial_fit: every label the "
                                 "classifier will see, e.g. classes=np.unique(y_all)")
            labels = np.unique(y) if classes is None else np.unique(np.asarray(classes))
            if labels.size < 2:
                raise ValueError(f"a classifier needs samples of at least 2 classes, got only one class: "
                                 f"{labels.tolist()}")
            self.classes_ = labels
        elif classes is not None and not np.array_equal(np.unique(np.asarray(classes)), self.classes_):
            raise ValueError(f"classes={list(classes)} differs from the classes of the first partial_fit call "
                             f"{self.classes_.tolist()}")
        unknown = np.setdiff1d(y, self.classes_)
        if unknown.size:
            raise ValueError(f"y contains labels {unknown.tolist()} that are not in classes_ "
                             f"{self.classes_.tolist()}: pass every label in classes= on the first partial_fit call")
        return X, y

    def _prepare_targets(self, y: np.ndarray, reset: bool) -> np.ndarray:
        if reset:
            self.n_outputs_ = 1 if self.classes_.size == 2 else self.classes_.size
        index = np.searchsorted(self.classes_, y)
        return index.astype(np.float64).reshape(-1, 1) if self.n_outputs_ == 1 else index.astype(np.int64)

    def _n_outputs(self) -> int:
        return self.n_outputs_

    def _loss_function(self) -> LossFn:
        if self.n_outputs_ == 1:
            return torch.nn.functional.binary_cross_entropy_with_logits
        return torch.nn.functional.cross_entropy

    def _validation_score(self, x: torch.Tensor, targets: torch.Tensor, y: np.ndarray) -> Callable[[], float]:
        def score() -> float:
            out = self._forward(x)
            index = (out[:, 0] > 0).astype(np.intp) if out.shape[1] == 1 else out.argmax(axis=1)
            return float(np.mean(self.classes_[index] == y))
        return score
