"""The estimators with calculation_method='GPU_CUDA': trained on the GPU, same results as on the CPU.

Marked ``gpu`` and skipped unless PyTorch sees a CUDA device and CuPy imports.
"""
from __future__ import annotations

import pickle

import numpy as np
import pytest

pytest.importorskip("torch.library", reason="PyTorch is not installed: pip install 'heterosymnn[sklearn]'")
pytest.importorskip("sklearn.base", reason="scikit-learn is not installed: pip install 'heterosymnn[sklearn]'")

import torch  # noqa: E402
from sklearn.datasets import load_iris, make_friedman1  # noqa: E402

from heterosymnn.sklearn import HeteroMLPClassifier, HeteroMLPRegressor  # noqa: E402


def _usable() -> bool:
    try:
        import cupy

        return torch.cuda.is_available() and cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no CuPy, no driver, a CPU-only PyTorch
        return False


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _usable(), reason="needs a CUDA device, CUDA PyTorch and CuPy")]

SMALL = dict(hidden_layers=(16,), max_iter=10, learning_rate_init=0.01, random_state=0, dtype="float64")


def test_regressor_trains_on_the_gpu_like_on_the_cpu():
    X, y = make_friedman1(n_samples=300, noise=0.1, random_state=1)
    gpu = HeteroMLPRegressor(calculation_method="GPU_CUDA", **SMALL).fit(X, y)
    cpu = HeteroMLPRegressor(calculation_method="CPU_JIT", **SMALL).fit(X, y)
    assert next(gpu.network_.parameters()).device.type == "cuda"
    assert gpu.network_[1].calculation_method == "GPU_CUDA"
    np.testing.assert_allclose(gpu.predict(X), cpu.predict(X), rtol=1e-6, atol=1e-6)
    restored = pickle.loads(pickle.dumps(gpu))
    np.testing.assert_array_equal(restored.predict(X), gpu.predict(X))


def test_classifier_with_early_stopping_on_the_gpu():
    X, y = load_iris(return_X_y=True)
    model = HeteroMLPClassifier(calculation_method="GPU_CUDA", early_stopping=True,
                                **dict(SMALL, max_iter=100)).fit(X, y)
    np.testing.assert_allclose(model.predict_proba(X).sum(axis=1), 1.0, atol=1e-12)
    assert model.score(X, y) > 0.8
