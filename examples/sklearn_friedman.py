"""HeteroMLPRegressor against scikit-learn's MLPRegressor on make_friedman1: test R^2 and fit time.

The heterosymnn estimator runs with its defaults: two hidden layers of 64 nodes
mixing ``swish``, ``sin(w*num)`` and ``tanh(b*num)``, every node's constant
learned with the weights; then with ``relu`` everywhere, to show what the formulas
add. ``MLPRegressor`` runs with its defaults, with ``max_iter=1000``, and with the
same two layers of 64, with the same budget of 200 epochs and with 1000. Same data,
same 25% test split. Every model runs on one thread (BLAS for scikit-learn, PyTorch
for heterosymnn): on a small, busy machine more threads make either side slower.

Run it as it is (several seconds on a laptop CPU)::

    python examples/sklearn_friedman.py
    python examples/sklearn_friedman.py --quick    # a small budget, as CI runs it
"""
from __future__ import annotations

import argparse
import time
import warnings

from sklearn.datasets import make_friedman1
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPRegressor
from threadpoolctl import threadpool_limits

from heterosymnn.sklearn import HeteroMLPRegressor


def models(quick: bool) -> list:
    """(label, estimator) pairs; ``quick`` caps every budget so the script runs in seconds."""
    cap = (lambda n: min(n, 20)) if quick else (lambda n: n)
    return [
        ("MLPRegressor() defaults", MLPRegressor(max_iter=cap(200), random_state=0)),
        ("MLPRegressor(max_iter=1000)", MLPRegressor(max_iter=cap(1000), random_state=0)),
        ("MLPRegressor((64, 64))", MLPRegressor(hidden_layer_sizes=(64, 64), max_iter=cap(200), random_state=0)),
        ("MLPRegressor((64, 64), max_iter=1000)",
         MLPRegressor(hidden_layer_sizes=(64, 64), max_iter=cap(1000), random_state=0)),
        # The same estimator with one fixed formula: what the mixed, learned formulas add here.
        ("HeteroMLPRegressor(activation='relu')",
         HeteroMLPRegressor(activation="relu", max_iter=cap(200), random_state=0)),
        ("HeteroMLPRegressor() defaults", HeteroMLPRegressor(max_iter=cap(200), random_state=0)),
    ]


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="400 samples and at most 20 epochs per model")
    parser.add_argument("--threads", type=int, default=1, help="BLAS and PyTorch threads for every model")
    args = parser.parse_args(argv)

    X, y = make_friedman1(n_samples=400 if args.quick else 2000, noise=0.1, random_state=0)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
    # Load (or, on the very first run, compile) the kernels and import PyTorch's optimiser
    # machinery before timing: one-off costs that MLPRegressor does not have.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        HeteroMLPRegressor(max_iter=1, random_state=0).fit(X_train[:20], y_train[:20])

    print(f"make_friedman1: {len(X_train)} training and {len(X_test)} test samples")
    print(f"{'model':<39} {'test R^2':>9} {'fit time':>9} {'epochs':>7}")
    results = {}
    for label, model in models(args.quick):
        if isinstance(model, HeteroMLPRegressor):
            model.set_params(n_threads=args.threads)
        started = time.perf_counter()
        with warnings.catch_warnings(), threadpool_limits(limits=args.threads):
            warnings.simplefilter("ignore", ConvergenceWarning)  # the capped budgets stop unconverged
            model.fit(X_train, y_train)
        seconds = time.perf_counter() - started
        results[label] = model.score(X_test, y_test)
        print(f"{label:<39} {results[label]:>9.4f} {seconds:>8.2f}s {model.n_iter_:>7}")

    first = model.learned_constants_[0]  # the last model is the heterosymnn one
    print("learned constants, first hidden layer, first nodes:")
    for node in range(6):
        values = ", ".join(f"{name}={value:.3f}" for name, value in first[node].items())
        config = model.network_[1].configs[node]
        formula = config if isinstance(config, str) else config[0]
        print(f"  node {node}: {formula:<12} {values}")
    scores = " ".join(f"r2_{i}={score:.6f}" for i, score in enumerate(results.values()))
    print(f"RESULT {scores}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
