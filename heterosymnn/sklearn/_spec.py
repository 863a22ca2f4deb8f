"""Estimator parameters -> validated, frozen specifications of the network and of its training.

The estimators store their constructor arguments untouched (scikit-learn's
rule); ``fit`` turns them into a :class:`NetworkSpec` and a
:class:`TrainingSpec` here, so every bad value is refused with one clear
message before anything is built or trained.
"""
from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional, Tuple, Union

# The default hidden activation: three formulas cycled over the nodes, each with a
# constant that learns per node (swish's slope beta, a sine's frequency w, a
# scaled tanh's steepness b). Tuples, not lists or dicts, so that it is an
# immutable default that ``get_params``/``clone`` copy faithfully.
DEFAULT_ACTIVATION: Tuple[Any, ...] = ("swish", ("sin(w*num)", (("w", 1.0),)), ("tanh(b*num)", (("b", 1.0),)))

SOLVERS = ("adam", "sgd")
DTYPES = ("float32", "float64")
LearnConstants = Union[bool, frozenset]


@dataclass(frozen=True)
class NetworkSpec:
    """Everything needed to build the network: layer sizes, node configs, backend options."""

    n_inputs: int
    hidden: Tuple[Tuple[Any, ...], ...]  # per hidden layer, one node config per node
    n_outputs: int
    learn_constants: LearnConstants
    method: str
    dtype: str


@dataclass(frozen=True)
class TrainingSpec:
    """How to train: optimiser, step size, batching, stopping rules, progress output."""

    solver: str
    learning_rate: float
    momentum: float
    alpha: float
    batch_size: Optional[int]  # None: min(200, n_samples)
    max_iter: int
    shuffle: bool
    tol: float
    n_iter_no_change: int
    early_stopping: bool
    validation_fraction: float
    verbose: bool
    n_threads: Optional[int]


def node_config(config: Any, where: str) -> Any:
    """One node config as ``SymbolicJITCompiler`` takes it: a string, or ``(formula, dict)``.

    Constants may also be given as a tuple of ``(name, value)`` pairs, which keeps
    a default parameter value immutable.
    """
    if isinstance(config, str):
        return config
    if isinstance(config, (tuple, list)) and len(config) == 2 and isinstance(config[0], str):
        constants = config[1]
        if isinstance(constants, Mapping):
            return (config[0], dict(constants))
        try:
            return (config[0], {str(name): float(value) for name, value in constants})
        except (TypeError, ValueError):
            pass
    raise ValueError(f"{where} must be a formula string such as 'tanh' or a (formula, constants) pair such as "
                     f"('a*sin(w*num)', {{'a': 1.0, 'w': 3.0}}), got {config!r}")


def hidden_configs(hidden_layers: Any, activation: Any) -> Tuple[Tuple[Any, ...], ...]:
    """Per hidden layer, the node configs: a size takes ``activation``'s formulas cycled over its nodes."""
    if isinstance(hidden_layers, numbers.Integral) and not isinstance(hidden_layers, bool):
        hidden_layers = (hidden_layers,)
    if isinstance(hidden_layers, (str, Mapping)) or not _is_sequence(hidden_layers):
        raise ValueError(f"hidden_layers must be a sequence with one entry per hidden layer, each a number of "
                         f"nodes (64) or a list of node configs (['relu', ('a*sin(w*num)', {{'a': 1.0, 'w': 2.0}})]),"
                         f" got {hidden_layers!r}")
    cycle = _activation_list(activation)
    layers = []
    for index, layer in enumerate(hidden_layers):
        if isinstance(layer, numbers.Integral) and not isinstance(layer, bool):
            if layer < 1:
                raise ValueError(f"hidden_layers[{index}] is {layer}: a layer needs at least one node")
            layers.append(tuple(cycle[node % len(cycle)] for node in range(int(layer))))
        elif _is_sequence(layer) and not isinstance(layer, str) and len(layer) > 0:
            layers.append(tuple(node_config(c, f"hidden_layers[{index}][{node}]") for node, c in enumerate(layer)))
        else:
            raise ValueError(f"hidden_layers[{index}] must be a number of nodes or a non-empty list of node "
                             f"configs, got {layer!r}")
    return tuple(layers)


def learn_constants_option(value: Any) -> LearnConstants:
    """``True``, ``False``, or the set of constant names that learn (the others stay fixed)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return frozenset({value})
    try:
        names = frozenset(value)
    except TypeError:
        names = None
    if names is None or not all(isinstance(n, str) for n in names):
        raise ValueError(f"learn_constants must be True, False or a set of constant names such as {{'w', 'b'}}, "
                         f"got {value!r}")
    return names


def training_spec(params: Mapping[str, Any]) -> TrainingSpec:
    """Check the training parameters of an estimator (``get_params()``) and freeze them."""
    solver = params["solver"]
    if solver not in SOLVERS:
        raise ValueError(f"solver must be 'adam' or 'sgd', got {solver!r}")
    batch_size = params["batch_size"]
    if not (batch_size == "auto" or (_is_int(batch_size) and batch_size >= 1)):
        raise ValueError(f"batch_size must be 'auto' or a positive integer, got {batch_size!r}")
    _positive("learning_rate_init", params["learning_rate_init"])
    _positive("max_iter", params["max_iter"], integer=True)
    _positive("n_iter_no_change", params["n_iter_no_change"], integer=True)
    for name in ("alpha", "tol", "momentum"):
        if not isinstance(params[name], numbers.Real) or params[name] < 0:
            raise ValueError(f"{name} must be a non-negative number, got {params[name]!r}")
    n_threads = params["n_threads"]
    if n_threads is not None and not (_is_int(n_threads) and n_threads >= 1):
        raise ValueError(f"n_threads must be None or a positive integer, got {n_threads!r}")
    fraction = params["validation_fraction"]
    if not isinstance(fraction, numbers.Real) or not 0 < fraction < 1:
        raise ValueError(f"validation_fraction must be a number strictly between 0 and 1, got {fraction!r}")
    return TrainingSpec(solver=solver, learning_rate=float(params["learning_rate_init"]),
                        momentum=float(params["momentum"]), alpha=float(params["alpha"]),
                        batch_size=None if batch_size == "auto" else int(batch_size),
                        max_iter=int(params["max_iter"]), shuffle=bool(params["shuffle"]), tol=float(params["tol"]),
                        n_iter_no_change=int(params["n_iter_no_change"]),
                        early_stopping=bool(params["early_stopping"]), validation_fraction=float(fraction),
                        verbose=bool(params["verbose"]), n_threads=n_threads)


def check_dtype(dtype: Any) -> str:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return str(dtype)


def _activation_list(activation: Any) -> Tuple[Any, ...]:
    if isinstance(activation, str):
        return (activation,)
    try:
        return (node_config(activation, "activation"),)  # one (formula, constants) pair
    except ValueError:
        pass
    if not _is_sequence(activation) or len(activation) == 0:
        raise ValueError(f"activation must be a formula ('tanh'), a (formula, constants) pair, or a non-empty list "
                         f"of them cycled over each layer's nodes, got {activation!r}")
    return tuple(node_config(c, f"activation[{i}]") for i, c in enumerate(activation))


def _is_sequence(value: Any) -> bool:
    return isinstance(value, (tuple, list))


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _positive(name: str, value: Any, integer: bool = False) -> None:
    ok = _is_int(value) if integer else isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not ok or value <= 0:
        kind = "a positive integer" if integer else "a positive number"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
