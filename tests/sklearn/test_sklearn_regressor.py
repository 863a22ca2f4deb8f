"""HeteroMLPRegressor: accuracy out of the box, reproducibility, pickling, constants, losses, stopping."""
from __future__ import annotations

import io
import pickle

import numpy as np
import pytest

pytest.importorskip("torch.library", reason="PyTorch is not installed: pip install 'heterosymnn[sklearn]'")
pytest.importorskip("sklearn.base", reason="scikit-learn is not installed: pip install 'heterosymnn[sklearn]'")

import joblib  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import make_friedman1  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from heterosymnn.sklearn import HeteroMLPRegressor  # noqa: E402

FAST = dict(hidden_layers=(16,), max_iter=30, learning_rate_init=0.01, random_state=0)
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # tiny budgets, on purpose


@pytest.fixture(scope="module")
def friedman():
    X, y = make_friedman1(n_samples=2000, noise=0.1, random_state=0)
    return train_test_split(X, y, test_size=0.25, random_state=0)


@pytest.fixture(scope="module")
def small():
    X, y = make_friedman1(n_samples=300, noise=0.1, random_state=1)
    return X, y


def test_defaults_reach_r2_of_0_9_on_friedman1(friedman):
    X_train, X_test, y_train, y_test = friedman
    model = HeteroMLPRegressor(random_state=0).fit(X_train, y_train)
    assert model.score(X_test, y_test) >= 0.9
    assert model.n_iter_ <= 200 and len(model.loss_curve_) == model.n_iter_


def test_same_random_state_gives_identical_predictions_without_touching_torchs_rng(small):
    X, y = small
    torch_state = torch.random.get_rng_state()
    first = HeteroMLPRegressor(**FAST).fit(X, y).predict(X)
    torch.manual_seed(123)  # the global RNG must not matter
    second = HeteroMLPRegressor(**FAST).fit(X, y).predict(X)
    torch.random.set_rng_state(torch_state)
    other = HeteroMLPRegressor(**dict(FAST, random_state=1)).fit(X, y).predict(X)
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)


def test_fit_leaves_torchs_global_rng_alone(small):
    X, y = small
    before = torch.random.get_rng_state()
    HeteroMLPRegressor(**FAST).fit(X, y)
    assert torch.equal(before, torch.random.get_rng_state())


def test_pickle_and_joblib_round_trips_give_identical_predictions(small):
    X, y = small
    model = HeteroMLPRegressor(**FAST).fit(X, y)
    expected = model.predict(X)
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.predict(X), expected)
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    buffer.seek(0)
    from_joblib = joblib.load(buffer)
    np.testing.assert_array_equal(from_joblib.predict(X), expected)
    assert from_joblib.learned_constants_ == model.learned_constants_
    # The optimiser travels too: one more epoch continues identically on both copies.
    np.testing.assert_array_equal(restored.partial_fit(X, y).predict(X), model.partial_fit(X, y).predict(X))


def test_learned_constants_per_layer_per_node(small):
    X, y = small
    layers = [[("a*sin(w*num)", {"a": 1.0, "w": 2.0}), "relu", ("tanh(b*num)", {"b": 0.5})], 4]
    model = HeteroMLPRegressor(hidden_layers=layers, activation=("swish", "elu"), max_iter=20,
                               random_state=0).fit(X, y)
    constants = model.learned_constants_
    assert [len(layer) for layer in constants] == [3, 4]
    assert set(constants[0][0]) == {"a", "w"} and constants[0][1] == {} and set(constants[0][2]) == {"b"}
    assert [set(node) for node in constants[1]] == [{"beta"}, {"alpha"}, {"beta"}, {"alpha"}]
    assert constants[0][0]["w"] != 2.0 and constants[0][2]["b"] != 0.5  # they learned
    assert model.network_[1].configs[1] == "relu" and model.network_[3].configs == ["swish", "elu"] * 2


def test_learn_constants_false_and_by_name(small):
    X, y = small
    layers = [[("a*sin(w*num)", {"a": 1.0, "w": 2.0}), ("tanh(b*num)", {"b": 0.5})], ["relu", "relu"]]
    frozen = HeteroMLPRegressor(hidden_layers=layers, learn_constants=False, max_iter=10, random_state=0).fit(X, y)
    assert frozen.learned_constants_[0] == [{"a": 1.0, "w": 2.0}, {"b": 0.5}]
    only_w = HeteroMLPRegressor(hidden_layers=layers, learn_constants={"w"}, max_iter=10, random_state=0).fit(X, y)
    (sine, tanh), relus = only_w.learned_constants_
    assert sine["a"] == 1.0 and sine["w"] != 2.0 and tanh == {"b": 0.5} and relus == [{}, {}]
    with pytest.raises(ValueError, match=r"learn_constants names \['omega'\], which no hidden node has"):
        HeteroMLPRegressor(hidden_layers=layers, learn_constants={"w", "omega"}, max_iter=1).fit(X, y)


def test_quantile_loss_formula_puts_predictions_above_most_targets(small):
    X, y = small
    model = HeteroMLPRegressor(loss=("quantile", {"tau": 0.9}), hidden_layers=(16,), max_iter=150,
                               learning_rate_init=0.01, random_state=0).fit(X, y)
    above = np.mean(model.predict(X) >= y)
    assert 0.8 <= above <= 0.97, above
    median = HeteroMLPRegressor(loss="mae", hidden_layers=(16,), max_iter=150, learning_rate_init=0.01,
                                random_state=0).fit(X, y)
    assert 0.35 <= np.mean(median.predict(X) >= y) <= 0.65


def test_mse_formula_trains_like_the_builtin_mse(small):
    X, y = small
    builtin = HeteroMLPRegressor(**dict(FAST, dtype="float64")).fit(X, y).predict(X)
    formula = HeteroMLPRegressor(loss="(y_pred - y_true)**2", **dict(FAST, dtype="float64")).fit(X, y).predict(X)
    np.testing.assert_allclose(formula, builtin, rtol=1e-6, atol=1e-6)


def test_early_stopping_keeps_the_best_validation_epoch(small):
    X, y = small
    model = HeteroMLPRegressor(early_stopping=True, n_iter_no_change=3, tol=0.05, max_iter=200,
                               **{k: v for k, v in FAST.items() if k != "max_iter"}).fit(X, y)
    assert model.n_iter_ < 200
    assert len(model.validation_scores_) == model.n_iter_ == len(model.loss_curve_)
    assert model.best_validation_score_ == max(model.validation_scores_)
    assert model.best_loss_ is None


def test_sgd_and_multi_output(small):
    X, y = small
    Y = np.column_stack([y, -2 * y])
    model = HeteroMLPRegressor(solver="sgd", hidden_layers=(16,), max_iter=100, learning_rate_init=0.01,
                               random_state=0).fit(X, Y)
    assert model.predict(X).shape == (len(X), 2) and model.n_outputs_ == 2
    assert model.score(X, Y) > 0.5


def test_partial_fit_continues_training(small):
    X, y = small
    model = HeteroMLPRegressor(hidden_layers=(16,), learning_rate_init=0.01, random_state=0)
    for _ in range(15):
        model.partial_fit(X, y)
    assert model.n_iter_ == 15 and len(model.loss_curve_) == 15
    assert model.loss_curve_[-1] < 0.5 * model.loss_curve_[0]
    with pytest.raises(ValueError, match="X has 3 features, but HeteroMLPRegressor is expecting 10"):
        model.partial_fit(X[:, :3], y)


def test_verbose_draws_a_progress_line_on_stderr(small, capsys):
    X, y = small
    HeteroMLPRegressor(**dict(FAST, max_iter=5, tol=0.0, n_iter_no_change=100), verbose=True).fit(X, y)
    err = capsys.readouterr().err
    assert "epoch 1/5" in err and "epoch 5/5" in err and err.endswith("\n") and "[" in err


@pytest.mark.parametrize("params, message", [
    (dict(hidden_layers=(0,)), r"hidden_layers\[0\] is 0: a layer needs at least one node"),
    (dict(hidden_layers="relu"), "hidden_layers must be a sequence"),
    (dict(hidden_layers=([],)), r"hidden_layers\[0\] must be a number of nodes or a non-empty list"),
    (dict(activation=5), "activation must be a formula"),
    (dict(activation=("relu", 3)), r"activation\[1\] must be a formula string"),
    (dict(solver="lbfgs"), "solver must be 'adam' or 'sgd', got 'lbfgs'"),
    (dict(learn_constants=3), "learn_constants must be True, False or a set of constant names"),
    (dict(dtype="float16"), "dtype must be 'float32' or 'float64', got 'float16'"),
    (dict(batch_size=0), "batch_size must be 'auto' or a positive integer"),
    (dict(validation_fraction=1.0), "validation_fraction must be a number strictly between 0 and 1"),
    (dict(learning_rate_init=-1.0), "learning_rate_init must be a positive number"),
    (dict(n_threads=0), "n_threads must be None or a positive integer"),
])
def test_bad_parameters_are_refused_at_fit_with_the_fix(small, params, message):
    X, y = small
    model = HeteroMLPRegressor(**params)  # the constructor stores parameters only
    with pytest.raises(ValueError, match=message):
        model.fit(X, y)


def test_bad_formula_names_the_node(small):
    from heterosymnn import FormulaParsingError

    X, y = small
    with pytest.raises(FormulaParsingError, match="factorial"):
        HeteroMLPRegressor(hidden_layers=[["relu", "factorial(num)"]], max_iter=1).fit(X, y)


def test_early_stopping_with_a_loss_formula_scores_by_that_loss(small):
    X, y = small
    model = HeteroMLPRegressor(loss="mae", early_stopping=True, n_iter_no_change=3, **FAST).fit(X, y)
    scores = np.array(model.validation_scores_)
    assert (scores < 0).all()  # minus the mean absolute error on the (standardised) validation targets
    assert scores[-1] > scores[0] and model.best_validation_score_ == scores.max()
