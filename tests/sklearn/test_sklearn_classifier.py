"""HeteroMLPClassifier: binary and multiclass, string labels, probabilities, partial_fit, pickling."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

pytest.importorskip("torch.library", reason="PyTorch is not installed: pip install 'heterosymnn[sklearn]'")
pytest.importorskip("sklearn.base", reason="scikit-learn is not installed: pip install 'heterosymnn[sklearn]'")

from sklearn.datasets import load_iris, make_classification  # noqa: E402

from heterosymnn.sklearn import HeteroMLPClassifier  # noqa: E402

FAST = dict(hidden_layers=(16,), max_iter=60, learning_rate_init=0.01, random_state=0)
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # tiny budgets, on purpose


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return (X - X.mean(axis=0)) / X.std(axis=0), np.array(["setosa", "versicolor", "virginica"])[y]


def test_binary_string_labels(iris):
    X, y = make_classification(n_samples=300, n_features=6, random_state=0)
    labels = np.where(y == 1, "yes", "no")
    model = HeteroMLPClassifier(**FAST).fit(X, labels)
    assert model.classes_.tolist() == ["no", "yes"] and model.n_outputs_ == 1
    proba = model.predict_proba(X)
    assert proba.shape == (300, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    predicted = model.predict(X)
    assert predicted.dtype.kind == "U" and set(predicted) <= {"no", "yes"}
    np.testing.assert_array_equal(predicted, model.classes_[proba.argmax(axis=1)])
    assert model.score(X, labels) > 0.9


def test_multiclass_probabilities_and_accuracy(iris):
    X, y = iris
    model = HeteroMLPClassifier(**FAST).fit(X, y)
    assert model.classes_.tolist() == ["setosa", "versicolor", "virginica"] and model.n_outputs_ == 3
    proba = model.predict_proba(X)
    assert proba.shape == (150, 3) and (proba >= 0).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(model.predict_log_proba(X), np.log(proba))
    assert model.score(X, y) > 0.93


def test_early_stopping_uses_a_stratified_validation_split(iris):
    X, y = iris
    model = HeteroMLPClassifier(early_stopping=True, validation_fraction=0.2, n_iter_no_change=5,
                                **dict(FAST, max_iter=300)).fit(X, y)
    assert len(model.validation_scores_) == model.n_iter_ < 300
    assert model.best_validation_score_ == max(model.validation_scores_) > 0.8


def test_partial_fit_needs_classes_first_and_refuses_unknown_labels(iris):
    X, y = iris
    model = HeteroMLPClassifier(hidden_layers=(8,), random_state=0)
    with pytest.raises(ValueError, match="classes must be passed on the first call to partial_fit"):
        model.partial_fit(X, y)
    model.partial_fit(X[:50], y[:50], classes=np.unique(y))  # one class seen, three known
    assert model.classes_.tolist() == ["setosa", "versicolor", "virginica"]
    model.partial_fit(X, y)
    assert model.n_iter_ == 2 and model.predict_proba(X).shape == (150, 3)
    with pytest.raises(ValueError, match=r"y contains labels \['rose'\] that are not in classes_"):
        model.partial_fit(X[:2], np.array(["rose", "setosa"]))


def test_one_class_is_refused(iris):
    X, _ = iris
    with pytest.raises(ValueError, match="needs samples of at least 2 classes, got only one class"):
        HeteroMLPClassifier(**FAST).fit(X, np.zeros(len(X)))


def test_pickle_round_trip_gives_identical_probabilities(iris):
    X, y = iris
    model = HeteroMLPClassifier(**dict(FAST, max_iter=10)).fit(X, y)
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.predict_proba(X), model.predict_proba(X))
    np.testing.assert_array_equal(restored.classes_, model.classes_)


def test_same_random_state_gives_identical_probabilities(iris):
    X, y = iris
    first = HeteroMLPClassifier(**dict(FAST, max_iter=10, early_stopping=True)).fit(X, y).predict_proba(X)
    second = HeteroMLPClassifier(**dict(FAST, max_iter=10, early_stopping=True)).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(first, second)
