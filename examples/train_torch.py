"""Fit a sum of sines with a small MLP whose hidden neurons each have their own activation.

The hidden layer mixes ``a*sin(w*num)`` (frequency and amplitude learnable per
neuron), ``leaky_relu`` (learnable slope) and ``tanh(b*num)`` (learnable
steepness): every constant is trained by backpropagation along with the
weights, through heterosymnn's native kernels. The same MLP with one fixed
activation gets the same steps, optimizer and data; both final losses are
printed, then some of the learned constants.

Run it as it is (a few seconds on a laptop CPU)::

    python examples/train_torch.py             # 1500 steps
    python examples/train_torch.py --steps 200
"""
from __future__ import annotations

import argparse
import math
import os
import time

import torch
from torch import nn

from heterosymnn.torch import HeteroActivation

HIDDEN = 32


def target(x: torch.Tensor) -> torch.Tensor:
    return torch.sin(2.3 * x) + 0.5 * torch.sin(5.1 * x + 1) + 0.25 * torch.sin(11.7 * x)


def hetero_configs() -> list:
    sines = [("a*sin(w*num)", {"a": 1.0, "w": 1.0 + i}) for i in range(16)]
    relus = [("leaky_relu", {"alpha": 0.1})] * 8
    tanhs = [("tanh(b*num)", {"b": 1.0})] * 8
    return sines + relus + tanhs


def mlp(activation: nn.Module) -> nn.Sequential:
    torch.manual_seed(0)  # the same initial weights for both models
    return nn.Sequential(nn.Linear(1, HIDDEN), activation, nn.Linear(HIDDEN, 1))


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float = 1e-2) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        return nn.functional.mse_loss(model(x), y).item()


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=int(os.environ.get("HETEROSYMNN_EXAMPLE_STEPS", 1500)))
    parser.add_argument("--baseline", choices=("relu", "tanh"), default="tanh")
    args = parser.parse_args(argv)

    x = torch.linspace(-math.pi, math.pi, 512).unsqueeze(1)
    y = target(x)

    started = time.perf_counter()
    layer = HeteroActivation(hetero_configs())
    hetero = train(mlp(layer), x, y, args.steps)
    baseline = train(mlp(nn.Tanh() if args.baseline == "tanh" else nn.ReLU()), x, y, args.steps)

    print(f"{args.steps} steps of Adam on {x.shape[0]} points, hidden layer of {HIDDEN} "
          f"({layer.calculation_method}), {time.perf_counter() - started:.1f} s in all")
    print(f"  heterogeneous activations: MSE {hetero:.6f}")
    print(f"  {args.baseline + ' everywhere':>25}: MSE {baseline:.6f}")
    learned = layer.node_constants()
    print("learned constants (first sines, a leaky_relu, a tanh):")
    for node in (0, 1, 2, 3, 16, 24):
        values = ", ".join(f"{name}={value:.3f}" for name, value in learned[node].items())
        print(f"  node {node:2d} {layer.configs[node][0]:>14}: {values}")
    print(f"RESULT hetero={hetero:.9g} baseline={baseline:.9g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
