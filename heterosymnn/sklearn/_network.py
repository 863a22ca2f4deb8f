"""NetworkSpec -> a PyTorch module: Linear layers, each hidden one followed by a HeteroActivation.

Weights are drawn from a ``torch.Generator`` the caller seeded, never from
PyTorch's global RNG, so that a fit with a given ``random_state`` is the same
whatever else the process did before.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Set, Union

import torch
from torch import nn

from ..torch import HeteroActivation
from ._spec import NetworkSpec

_TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def torch_dtype(name: str) -> torch.dtype:
    return _TORCH_DTYPES[name]


def build_network(spec: NetworkSpec, generator: torch.Generator) -> nn.Sequential:
    """The MLP of ``spec``, with Glorot-uniform weights and biases drawn from ``generator``.

    Glorot's bound (as scikit-learn's MLP uses) keeps pre-activations of order one
    for the bounded and periodic formulas a hidden layer may mix.
    """
    dtype = torch_dtype(spec.dtype)
    trainable = spec.learn_constants if isinstance(spec.learn_constants, bool) else set(spec.learn_constants)
    layers: List[nn.Module] = []
    width = spec.n_inputs
    seen: Set[str] = set()
    for configs in spec.hidden:
        layers.append(_linear(width, len(configs), dtype, generator))
        layers.append(_activation(list(configs), trainable, spec.method, dtype, seen))
        width = len(configs)
    if not isinstance(trainable, bool) and trainable - seen:
        raise ValueError(f"learn_constants names {sorted(trainable - seen)}, which no hidden node has; the hidden "
                         f"nodes' constants are: {', '.join(sorted(seen)) or 'none'}")
    layers.append(_linear(width, spec.n_outputs, dtype, generator))
    return nn.Sequential(*layers)


def activations(network: nn.Sequential) -> List[HeteroActivation]:
    """The hidden layers' activation modules, in order."""
    return [module for module in network if isinstance(module, HeteroActivation)]


def learned_constants(network: nn.Sequential) -> List[List[Dict[str, float]]]:
    """Per hidden layer, per node, ``{constant name: current value}``."""
    return [layer.node_constants() for layer in activations(network)]


def _linear(n_in: int, n_out: int, dtype: torch.dtype, generator: torch.Generator) -> nn.Linear:
    layer = nn.utils.skip_init(nn.Linear, n_in, n_out, dtype=dtype)  # its own init would draw from the global RNG
    bound = math.sqrt(6.0 / (n_in + n_out))
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound, generator=generator)
        layer.bias.uniform_(-bound, bound, generator=generator)
    return layer


def _activation(configs: List[Any], trainable: Union[bool, Set[str]], method: str, dtype: torch.dtype,
                seen: Set[str]) -> HeteroActivation:
    """One hidden layer's activation; a set of names applies to the nodes that have those constants.

    HeteroActivation refuses names it does not have, but one layer may lack a constant that
    another one learns: the layer is built frozen first to read its names (a warm compiler
    from the cache, nothing is compiled twice), then rebuilt with the names it has.
    """
    if isinstance(trainable, bool):
        layer = HeteroActivation(configs, trainable=trainable, method=method, dtype=dtype)
        seen.update(name for _, name in layer.constant_names)
        return layer
    layer = HeteroActivation(configs, trainable=False, method=method, dtype=dtype)
    names = {name for _, name in layer.constant_names}
    seen.update(names)
    wanted = trainable & names
    if not wanted:
        return layer
    return HeteroActivation(configs, trainable=True if wanted == names else wanted, method=method, dtype=dtype)
