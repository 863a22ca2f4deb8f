"""What both estimators share: fit / partial_fit over the PyTorch network, prediction, fitted state.

A subclass says how targets are validated and become training tensors
(``_validate_targets``, ``_prepare_targets``), which loss trains the network
(``_loss_function``), how a validation split is scored and how the network's
raw output becomes predictions; everything else — input validation through
scikit-learn's helpers, seeding, the validation split, building the network,
the training loop — lives here once.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Optional, Tuple

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from ._compat import validate_data
from ._network import build_network, learned_constants, torch_dtype
from ._spec import NetworkSpec, TrainingSpec, check_dtype, hidden_configs, learn_constants_option, training_spec
from ._training import LossFn, Progress, make_optimizer, torch_threads, train

_SEED_LIMIT = 2**31 - 1


class HeteroMLPBase(BaseEstimator):
    """Base of :class:`HeteroMLPRegressor` and :class:`HeteroMLPClassifier` (not used directly)."""

    _stratify = False  # the classifier stratifies its validation split

    # -- subclass hooks ----------------------------------------------------------------
    def _validate_targets(self, X: Any, y: Any, reset: bool, incremental: bool,
                          classes: Any) -> Tuple[np.ndarray, np.ndarray]:
        """``(X, y)`` checked by scikit-learn's helpers; on ``reset``, the target's shape or classes recorded."""
        raise NotImplementedError

    def _prepare_targets(self, y: np.ndarray, reset: bool) -> np.ndarray:
        raise NotImplementedError

    def _n_outputs(self) -> int:
        raise NotImplementedError

    def _loss_function(self) -> LossFn:
        raise NotImplementedError

    def _validation_score(self, x: torch.Tensor, targets: torch.Tensor, y: np.ndarray) -> Callable[[], float]:
        """A function scoring the network on the validation split (higher is better)."""
        raise NotImplementedError

    # -- fitting -----------------------------------------------------------------------
    def _fit(self, X: Any, y: Any, *, incremental: bool, classes: Any = None) -> "HeteroMLPBase":
        spec = training_spec(self.get_params())
        with torch_threads(spec.n_threads):
            return self._fit_with(X, y, spec, incremental=incremental, classes=classes)

    def _fit_with(self, X: Any, y: Any, spec: TrainingSpec, *, incremental: bool, classes: Any) -> "HeteroMLPBase":
        reset = not (incremental and hasattr(self, "network_"))
        X, y = self._validate_targets(X, y, reset, incremental, classes)
        targets = self._prepare_targets(y, reset)
        dtype = torch_dtype(check_dtype(self.dtype))
        if reset:
            self._rng = check_random_state(self.random_state)
            if isinstance(self.random_state, np.random.RandomState):
                self._rng = np.random.RandomState(self._rng.randint(_SEED_LIMIT))  # do not keep the caller's
            generator = self._generator()
            network = build_network(self._network_spec(X.shape[1]), generator).to(self._device())
            self.network_ = network
            self._optimizer = make_optimizer(network, spec)
            self._progress = Progress()
        else:
            generator = self._generator()
            for group in self._optimizer.param_groups:  # set_params between partial_fit calls takes effect
                group["lr"] = spec.learning_rate
        t_dtype = dtype if targets.dtype.kind == "f" else None  # class indices stay integers
        validation = None
        if spec.early_stopping and not incremental:
            X, X_val, targets, t_val, _, y_val = train_test_split(
                X, targets, y, test_size=spec.validation_fraction, random_state=self._rng.randint(_SEED_LIMIT),
                stratify=y if self._stratify else None)
            validation = self._validation_score(self._tensor(X_val, dtype), self._tensor(t_val, t_dtype), y_val)
        x, t = self._tensor(X, dtype), self._tensor(targets, t_dtype)
        epochs = 1 if incremental else spec.max_iter
        run, stopped = train(self.network_, self._optimizer, self._loss_function(), x, t, spec, generator,
                             self._progress, epochs=epochs, validation_score=validation, check_stop=not incremental)
        self.n_iter_ = run if reset else self.n_iter_ + run
        self.t_ = self._progress.t
        self.loss_ = self._progress.loss_curve[-1]
        self.loss_curve_ = list(self._progress.loss_curve)
        self.best_loss_ = None if validation is not None else self._progress.best_loss
        self.validation_scores_ = list(self._progress.validation_scores) if validation is not None else None
        self.best_validation_score_ = self._progress.best_validation_score if validation is not None else None
        self.learned_constants_ = learned_constants(self.network_)
        if not incremental and not stopped:
            warnings.warn(f"{type(self).__name__}: the maximum number of epochs ({spec.max_iter}) was reached "
                          f"before the optimisation converged; raise max_iter or learning_rate_init",
                          ConvergenceWarning, stacklevel=4)
        return self

    def _network_spec(self, n_features: int) -> NetworkSpec:
        return NetworkSpec(n_inputs=n_features, hidden=hidden_configs(self.hidden_layers, self.activation),
                           n_outputs=self._n_outputs(), learn_constants=learn_constants_option(self.learn_constants),
                           method=self.calculation_method, dtype=check_dtype(self.dtype))

    def _generator(self) -> torch.Generator:
        """A generator seeded from the estimator's own RandomState: PyTorch's global RNG is never touched."""
        return torch.Generator().manual_seed(int(self._rng.randint(_SEED_LIMIT)))

    def _device(self) -> torch.device:
        return torch.device("cuda" if str(self.calculation_method).upper() == "GPU_CUDA" else "cpu")

    def _tensor(self, array: np.ndarray, dtype: Optional[torch.dtype]) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(array), dtype=dtype, device=self._device())

    # -- prediction --------------------------------------------------------------------
    def _raw_output(self, X: Any) -> np.ndarray:
        """The network's output for validated ``X``, as a float64 array ``(n_samples, n_outputs)``."""
        check_is_fitted(self, "network_")
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        return self._forward(self._tensor(X, self._torch_dtype()))

    def _forward(self, x: torch.Tensor) -> np.ndarray:
        self.network_.eval()
        with torch.no_grad(), torch_threads(getattr(self, "n_threads", None)):
            return self.network_(x).to("cpu", torch.float64).numpy()

    def _torch_dtype(self) -> torch.dtype:
        return next(self.network_.parameters()).dtype
