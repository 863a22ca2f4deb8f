"""Parameters -> network specification: sizes, node lists, formulas cycled, constants as pairs."""
from __future__ import annotations

import pytest

pytest.importorskip("torch.library", reason="PyTorch is not installed: pip install 'heterosymnn[sklearn]'")
pytest.importorskip("sklearn.base", reason="scikit-learn is not installed: pip install 'heterosymnn[sklearn]'")

from heterosymnn.sklearn._spec import (  # noqa: E402
    DEFAULT_ACTIVATION, hidden_configs, learn_constants_option, node_config)


def test_sizes_cycle_the_activation_formulas_over_the_nodes():
    layers = hidden_configs((4, 2), ("relu", ("a*sin(num)", {"a": 2.0})))
    assert layers == (("relu", ("a*sin(num)", {"a": 2.0}), "relu", ("a*sin(num)", {"a": 2.0})),
                      ("relu", ("a*sin(num)", {"a": 2.0})))


def test_a_single_formula_pair_is_one_activation_not_a_list():
    assert hidden_configs((2,), ("tanh(b*num)", {"b": 3.0})) == ((("tanh(b*num)", {"b": 3.0}),) * 2,)
    assert hidden_configs(3, "tanh") == (("tanh",) * 3,)


def test_node_lists_and_sizes_mix_and_constants_may_be_pairs():
    layers = hidden_configs([["relu", ("w*num", (("w", 2),))], 1], "sin")
    assert layers == (("relu", ("w*num", {"w": 2.0})), ("sin",))
    assert node_config(("w*num", {"w": 1}), "x") == ("w*num", {"w": 1})


def test_default_activation_is_immutable_and_expands_to_learnable_constants():
    assert isinstance(DEFAULT_ACTIVATION, tuple)
    assert hidden_configs((3,), DEFAULT_ACTIVATION) == (("swish", ("sin(w*num)", {"w": 1.0}),
                                                         ("tanh(b*num)", {"b": 1.0})),)


def test_learn_constants_option():
    assert learn_constants_option(True) is True and learn_constants_option(False) is False
    assert learn_constants_option({"w", "b"}) == frozenset({"w", "b"}) and learn_constants_option("w") == {"w"}
