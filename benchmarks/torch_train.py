"""HeteroActivation training steps against the best pure-PyTorch layers, in one interleaved run.

Workload: a heterogeneous activation layer of 8 formulas, each feature with its own
learnable constants (1.5 constants per feature):

    a*sin(w*num)   leaky_relu (alpha)   a*tanh(b*num)         swish (beta)
    elu (alpha)    c*sigmoid(k*num)     log1p(exp(k*num))/k   a*num + b

``blocked``: the features of one formula are contiguous; ``interleaved``: feature j
uses formula j % 8. One step is a forward and a backward of ``sum(out * g)``
(``out.backward(g)``), with the input's and every constant's gradient, the gradients
set to None between steps (no optimizer). Contenders:

* ``HeteroActivation(configs, method="CPU_JIT")`` (and CPU_PYTHON for reference),
* the same layer in PyTorch, one Parameter per (formula, constant) over that formula's
  features: blocked, slices and one ``torch.cat``; interleaved, two ways (strided
  views ``x.unflatten(-1, (-1, 8))[..., f]`` and one ``torch.stack``, or one
  ``index_select`` to the blocked order and one back), each in eager mode and under
  ``torch.compile`` (inductor, ``dynamic=False``; the first step, which compiles on a cold
  inductor cache, is reported separately).

Sizes (batch x features): 1024x1024, 256x256 and 1x32 (per-call overhead), float32.
Then a whole training step of a small MLP (Linear(64, 256), the activation blocked,
Linear(256, 1); batch 256, MSE, fused Adam) with each activation, and with ``nn.Tanh``
for scale. Every contender is checked against the PyTorch layer in float64 (forward,
input gradient, constants' gradients) before it is timed. Times are medians of
``cpu_peers.timed`` (contenders interleaved in a rotating order, each timed call right
after an untimed one of itself); speed-ups are against the faster PyTorch formulation
measured in the same run. On a machine with CUDA (and CuPy), the activation cases run
on the GPU too.

Usage: python benchmarks/torch_train.py [--repeats N] [--quick] [--threads N] [--json PATH]
"""
from __future__ import annotations

import argparse
import copy
import functools
import importlib.util
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from cpu_peers import timed, wall_seconds  # noqa: E402

# (formula, {constant: initial range}, PyTorch function of (x, *constants in that order))
FORMULAS: Tuple[Tuple[str, Dict[str, Tuple[float, float]], str], ...] = (
    ("a*sin(w*num)", {"a": (0.5, 1.5), "w": (0.5, 3.0)}, "sin"),
    ("leaky_relu", {"alpha": (0.01, 0.3)}, "leaky_relu"),
    ("a*tanh(b*num)", {"a": (0.5, 1.5), "b": (0.5, 1.5)}, "tanh"),
    ("swish", {"beta": (0.5, 2.0)}, "swish"),
    ("elu", {"alpha": (0.5, 1.5)}, "elu"),
    ("c*sigmoid(k*num)", {"c": (0.5, 1.5), "k": (0.5, 2.0)}, "sigmoid"),
    ("log1p(exp(k*num))/k", {"k": (0.5, 2.0)}, "softplus"),
    ("a*num + b", {"a": (0.5, 1.5), "b": (-0.5, 0.5)}, "linear"),
)
SIZES = ((1024, 1024), (256, 256), (1, 32))
TARGET_SAMPLE_S = 0.004  # steps per timed sample: enough to last about this long


def torch_functions() -> Dict[str, Callable]:
    """The 8 formulas as a careful PyTorch user writes them (fewest ops, fused ones where they exist)."""
    import torch
    import torch.nn.functional as F

    return {
        "sin": lambda x, a, w: a * torch.sin(w * x),
        "leaky_relu": lambda x, alpha: torch.where(x > 0, x, alpha * x),  # F.leaky_relu takes no tensor slope
        "tanh": lambda x, a, b: a * torch.tanh(b * x),
        "swish": lambda x, beta: x * torch.sigmoid(beta * x),
        "elu": lambda x, alpha: torch.where(x > 0, x, alpha * torch.expm1(x)),  # F.elu: no tensor alpha
        "sigmoid": lambda x, c, k: c * torch.sigmoid(k * x),
        "softplus": lambda x, k: F.softplus(k * x) / k,
        "linear": lambda x, a, b: torch.addcmul(b, a, x),
    }


# -- the layer ----------------------------------------------------------------------------
class Layer:
    """One heterogeneous layer: which formula each feature uses, and every constant's value."""

    def __init__(self, features: int, blocked: bool, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.features, self.blocked = features, blocked
        self.kinds = np.array([(j * 8 // features) if blocked else j % 8 for j in range(features)])
        self.nodes = [np.flatnonzero(self.kinds == k) for k in range(8)]  # features of formula k, in order
        self.values = [{name: rng.uniform(lo, hi, size=len(self.nodes[k])).astype(np.float32).astype(float)
                        for name, (lo, hi) in FORMULAS[k][1].items()} for k in range(8)]
        position = [0] * 8
        self.configs = []
        for kind in self.kinds:
            formula, names, _ = FORMULAS[kind]
            self.configs.append((formula, {name: self.values[kind][name][position[kind]] for name in names}))
            position[kind] += 1

    def hetero(self, method: str, device: str = "cpu"):
        from heterosymnn.torch import HeteroActivation

        layer = HeteroActivation(self.configs, method=method, strict=True)
        return layer.to(device)

    def torch_module(self, arrangement: str, dtype=None, device: str = "cpu"):
        import torch

        module = TorchHetero(self, arrangement)
        return module.to(device=device, dtype=dtype or torch.float32)

    def hetero_grad_index(self, constant_names: Sequence[Tuple[int, str]]) -> List[np.ndarray]:
        """For each PyTorch parameter (formula k, constant name), its entries' positions in ``constant_names``."""
        where = {pair: i for i, pair in enumerate(constant_names)}
        return [np.array([where[(int(node), name)] for node in self.nodes[k]])
                for k in range(8) for name in FORMULAS[k][1]]


@functools.lru_cache(maxsize=None)
def _torch_module_class():
    import torch
    from torch import nn

    functions = torch_functions()

    class TorchHetero(nn.Module):
        """The layer in PyTorch: one Parameter per (formula, constant), over that formula's features.

        ``arrangement``: ``blocked`` (contiguous slices, one ``torch.cat``), ``strided``
        (feature j uses formula j % 8: strided views, one ``torch.stack``) or ``gather``
        (any order: one ``index_select`` to the blocked order, slices, ``torch.cat``, one
        ``index_select`` back).
        """

        def __init__(self, layer: Layer, arrangement: str):
            super().__init__()
            self.arrangement = arrangement
            self.consts = nn.ParameterList()
            self.plan = []  # (function, parameter indices, first feature, count) in the blocked order
            start = 0
            for k, (_, names, function) in enumerate(FORMULAS):
                slots = []
                for name in names:
                    slots.append(len(self.consts))
                    self.consts.append(nn.Parameter(torch.tensor(layer.values[k][name], dtype=torch.float32)))
                self.plan.append((functions[function], tuple(slots), start, len(layer.nodes[k])))
                start += len(layer.nodes[k])
            if arrangement == "blocked" and not layer.blocked:
                raise ValueError("a blocked PyTorch layer needs a blocked feature order")
            order = np.concatenate(layer.nodes)
            self.register_buffer("order", torch.as_tensor(order), persistent=False)
            self.register_buffer("inverse", torch.as_tensor(np.argsort(order)), persistent=False)

        def _blocked(self, x):
            return torch.cat([f(x[..., start:start + count], *[self.consts[i] for i in slots])
                              for f, slots, start, count in self.plan], dim=-1)

        def forward(self, x):
            if self.arrangement == "blocked":
                return self._blocked(x)
            if self.arrangement == "strided":
                x8 = x.unflatten(-1, (-1, 8))
                parts = [f(x8[..., k], *[self.consts[i] for i in slots])
                         for k, (f, slots, _, _) in enumerate(self.plan)]
                return torch.stack(parts, dim=-1).flatten(-2)
            return self._blocked(x.index_select(-1, self.order)).index_select(-1, self.inverse)

    return TorchHetero


def TorchHetero(layer: Layer, arrangement: str):  # noqa: N802 - a class, defined once torch is imported
    return _torch_module_class()(layer, arrangement)


# -- contenders ------------------------------------------------------------------------------
class Contender:
    """A module, the parameters whose gradients a step resets, and how to read its constants' gradient."""

    def __init__(self, name: str, module, constants_grad: Callable, compiled: bool = False):
        self.name, self.module, self.compiled = name, module, compiled
        self.params = list(module.parameters())
        self.constants_grad = constants_grad  # () -> list of tensors, one per (formula, constant)
        self.first_step_s: Optional[float] = None

    def step(self, x, g) -> None:
        x.grad = None
        for p in self.params:
            p.grad = None
        self.module(x).backward(g)


def contenders_for(layer: Layer, device: str, with_python: bool) -> List[Contender]:
    import torch

    result = []
    methods = ["CPU_JIT"] + (["CPU_PYTHON"] if with_python else []) if device == "cpu" else ["AUTO"]
    for method in methods:
        module = layer.hetero(method, device)
        index = [torch.as_tensor(i, device=device) for i in layer.hetero_grad_index(module.constant_names)]
        name = f"heterosymnn {method if device == 'cpu' else module.calculation_method}"
        result.append(Contender(name, module, lambda m=module, ix=index: [m.constants.grad[i] for i in ix]))
    arrangements = ["blocked"] if layer.blocked else ["strided", "gather"]
    for compiled in (False, True):
        for arrangement in arrangements:
            module = layer.torch_module(arrangement, device=device)
            grads = (lambda m=module: [p.grad for p in m.consts])
            label = f"PyTorch {'compile' if compiled else 'eager'}" + ("" if layer.blocked else f" ({arrangement})")
            run = torch.compile(module, dynamic=False) if compiled else module
            result.append(Contender(label, run, grads, compiled))
    return result


def check(layer: Layer, contenders: List[Contender], x, g) -> Dict[str, float]:
    """Each contender's worst error against the PyTorch layer in float64, relative to the largest value.

    Raises if any exceeds 1e-4 (forward, input gradient) or 1e-3 (constants' gradients:
    sums over the batch, accumulated in float32 by PyTorch).
    """
    import torch

    reference = layer.torch_module("blocked" if layer.blocked else "gather", dtype=torch.float64, device=x.device)
    x64 = x.detach().double().requires_grad_(True)
    out64 = reference(x64)
    out64.backward(g.double())
    want = [out64.detach(), x64.grad] + [p.grad for p in reference.consts]
    errors = {}
    for contender in contenders:
        xc = x.detach().clone().requires_grad_(True)
        for p in contender.params:
            p.grad = None
        out = contender.module(xc)
        out.backward(g)
        got = [out.detach(), xc.grad] + list(contender.constants_grad())
        worst = [float((a.double() - b).abs().max() / max(float(b.abs().max()), 1.0)) for a, b in zip(got, want)]
        errors[contender.name] = max(worst)
        if max(worst[:2]) > 1e-4 or max(worst[2:]) > 1e-3:
            raise AssertionError(f"{contender.name} disagrees with PyTorch float64: forward {worst[0]:.2e}, "
                                 f"input gradient {worst[1]:.2e}, constants' gradients {max(worst[2:]):.2e}")
    return errors


def seconds_function(device: str) -> Callable:
    if device != "cuda":
        return wall_seconds
    import torch

    def seconds_of(call) -> float:
        torch.cuda.synchronize()
        start = time.perf_counter()
        call()
        torch.cuda.synchronize()
        return time.perf_counter() - start
    return seconds_of


def repeated(call: Callable, loops: int) -> Callable:
    def run():
        for _ in range(loops):
            call()
    return run


def measure(calls: Dict[str, Callable], repeats: int, seconds_of: Callable) -> Tuple[Dict[str, float], int]:
    """Median seconds per call of each, timed in loops that last about TARGET_SAMPLE_S; and the loop length."""
    fastest = min(min(seconds_of(c) for _ in range(3)) for c in calls.values())
    loops = max(1, int(round(TARGET_SAMPLE_S / max(fastest, 1e-7))))
    medians = timed({name: repeated(c, loops) for name, c in calls.items()}, repeats, seconds_of)
    return {name: t / loops for name, t in medians.items()}, loops


def best(medians: Dict[str, float], prefix: str) -> float:
    return min(t for name, t in medians.items() if name.startswith(prefix))


def print_table(title: str, medians: Dict[str, float], unit: str, notes: Dict[str, str]) -> None:
    scale = 1e6 if unit == "us" else 1e3
    eager, compiled = best(medians, "PyTorch eager"), best(medians, "PyTorch compile")
    print(title)
    print(f"  {'contender':34s} {unit + '/step':>10s} {'compile/this':>13s} {'eager/this':>11s}")
    for name, t in medians.items():
        print(f"  {name:34s} {t * scale:10.3f} {compiled / t:12.2f}x {eager / t:10.2f}x  {notes.get(name, '')}")


def activation_case(batch: int, features: int, blocked: bool, device: str, repeats: int,
                    with_python: bool) -> dict:
    import torch

    layer = Layer(features, blocked)
    generator = torch.Generator().manual_seed(1)
    x = (torch.randn(batch, features, generator=generator) * 2).to(device).requires_grad_(True)
    g = torch.randn(batch, features, generator=generator).to(device)
    contenders = contenders_for(layer, device, with_python)
    seconds_of = seconds_function(device)
    for contender in contenders:  # the first step builds (heterosymnn: cached kernels) or compiles
        contender.first_step_s = seconds_of(lambda c=contender: c.step(x, g))
        for _ in range(2):
            contender.step(x, g)
    errors = check(layer, contenders, x, g)
    medians, loops = measure({c.name: (lambda c=c: c.step(x, g)) for c in contenders}, repeats, seconds_of)
    layout = "blocked" if blocked else "interleaved"
    unit = "us" if batch * features < 4096 else "ms"
    notes = {c.name: f"(first step {c.first_step_s:.1f} s: compile)" for c in contenders if c.compiled}
    print_table(f"{device} float32 batch {batch} x {features} features, {layout}: {unit} per training step "
                f"(median of {repeats}, {loops} step(s) per sample; worst error vs float64 "
                f"{max(errors.values()):.1e})", medians, unit, notes)
    return {"device": device, "batch": batch, "features": features, "layout": layout, "loops": loops,
            "seconds_per_step": medians, "max_error": errors,
            "first_step_seconds": {c.name: c.first_step_s for c in contenders}}


# -- the MLP ------------------------------------------------------------------------------------
def mlp_case(repeats: int, batch: int = 256, width: int = 256) -> dict:
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(0)
    first, last = nn.Linear(64, width), nn.Linear(width, 1)
    layer = Layer(width, blocked=True)
    activations = {
        "heterosymnn CPU_JIT": layer.hetero("CPU_JIT"),
        "PyTorch eager": layer.torch_module("blocked"),
        "PyTorch compile": torch.compile(layer.torch_module("blocked"), dynamic=False),
        "nn.Tanh (no constants, for scale)": nn.Tanh(),
    }
    x, y = torch.randn(batch, 64), torch.randn(batch, 1)
    steps, losses, first_step = {}, {}, {}
    for name, activation in activations.items():
        model = nn.Sequential(copy.deepcopy(first), activation, copy.deepcopy(last))
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)

        def step(model=model, optimizer=optimizer):
            optimizer.zero_grad(set_to_none=True)
            loss = F.mse_loss(model(x), y)
            loss.backward()
            optimizer.step()
            return loss

        with torch.no_grad():
            losses[name] = float(F.mse_loss(model(x), y))
        first_step[name] = wall_seconds(step)
        for _ in range(2):
            step()
        steps[name] = step
    reference = losses["PyTorch eager"]
    for name, value in losses.items():
        if "Tanh" not in name and abs(value - reference) > 1e-5 * abs(reference):
            raise AssertionError(f"MLP with {name}: initial loss {value} differs from PyTorch eager's {reference}")
    medians, loops = measure(steps, repeats, wall_seconds)
    print_table(f"MLP training step: Linear(64, {width}) -> activation ({width} features, blocked) -> "
                f"Linear({width}, 1), batch {batch}, MSE, fused Adam; ms per step (median of {repeats}, "
                f"{loops} steps per sample)", medians, "ms", {})
    return {"batch": batch, "width": width, "seconds_per_step": medians, "first_step_seconds": first_step}


# -- the machine ----------------------------------------------------------------------------
def cpu_ticks() -> Tuple[int, int]:
    """(busy, total) clock ticks of the whole machine so far (Linux), else (0, 0)."""
    try:
        fields = [int(v) for v in open("/proc/stat").readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields[:8]) - idle, sum(fields[:8])


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return sum(u.ru_utime + u.ru_stime for u in usage)


class OtherLoad:
    """The share of the machine's CPU time that other processes kept busy since ``start()``.

    On a 2-core machine another busy process ruins any multi-threaded timing: each OpenMP
    region waits for the thread that lost its core (PyTorch eager, dozens of regions per
    step, suffers most). The run says so rather than print such figures unmarked.
    """

    def __init__(self):
        self.start()

    def start(self) -> None:
        self.ticks, self.own = cpu_ticks(), own_cpu_seconds()

    def fraction(self) -> float:
        (busy0, total0), (busy1, total1) = self.ticks, cpu_ticks()
        hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        others = (busy1 - busy0) / hz - (own_cpu_seconds() - self.own)
        return max(others, 0.0) / max((total1 - total0) / hz, 1e-9)

    def note(self) -> str:
        share = self.fraction()
        warning = " -- too busy for multi-threaded figures: rerun, or use --threads 1" if share > 0.1 else ""
        return f"other processes kept {share * 100:.0f}% of the CPU time busy{warning}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--quick", action="store_true", help="1024x1024 interleaved, 1x32 and the MLP; 7 repeats")
    parser.add_argument("--threads", type=int, default=0,
                        help="threads for PyTorch, inductor and the heterosymnn kernels (0: the default)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH ('-': stdout)")
    args = parser.parse_args(argv)
    repeats = min(args.repeats, 7) if args.quick else args.repeats
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = os.environ["HETEROSYMNN_NUM_THREADS"] = str(args.threads)
    scratch = tempfile.mkdtemp(prefix="torch_train_")
    # Cold caches: heterosymnn builds its kernels and inductor compiles, as on a new machine.
    os.environ["HETEROSYMNN_CACHE_DIR"] = os.path.join(scratch, "heterosymnn")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(scratch, "inductor")
    try:
        import torch
        import torch._dynamo

        if args.threads:
            torch.set_num_threads(args.threads)
        torch._dynamo.config.recompile_limit = 64  # one compiled graph per case: never fall back to eager
        devices = ["cpu"]
        if torch.cuda.is_available():
            if importlib.util.find_spec("cupy") is not None:
                devices.append("cuda")
            else:
                print("CUDA is available but CuPy is not: the GPU cases are skipped")
        machine = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
                   "threads": torch.get_num_threads(), "processor": platform.processor() or platform.machine()}
        print(f"torch {machine['torch']}, {machine['threads']} threads on {machine['cpus']} CPUs; "
              f"step = forward + backward (input and constants' gradients); float32; "
              f"'compile/this' and 'eager/this' are speed-ups over the faster PyTorch formulation")
        start = time.perf_counter()
        Layer(1024, False).hetero("CPU_JIT")  # the cold kernel build, once for every case
        build_s = time.perf_counter() - start
        print(f"HeteroActivation of the 8 formulas, cold kernel cache (gcc): {build_s:.2f} s to construct\n")
        whole, load = OtherLoad(), OtherLoad()
        sizes = [(1024, 1024), (1, 32)] if args.quick else list(SIZES)
        cases = []
        for device in devices:
            for batch, features in sizes:
                for blocked in ((False,) if args.quick and features > 32 else (False, True)):
                    load.start()
                    cases.append(activation_case(batch, features, blocked, device, repeats,
                                                 with_python=device == "cpu"))
                    cases[-1]["others_busy_fraction"] = load.fraction()
                    print(f"  ({load.note()})\n")
        load.start()
        mlp = mlp_case(repeats)
        mlp["others_busy_fraction"] = load.fraction()
        print(f"  ({load.note()})")
        print(f"\n{time.perf_counter() - start:.0f} s in all; {whole.note()}")
        if args.json:
            text = json.dumps({"machine": machine, "cold_build_seconds": build_s, "repeats": repeats,
                               "cases": cases, "mlp": mlp, "others_busy_fraction": whole.fraction()}, indent=1)
            if args.json == "-":
                print(text)
            else:
                Path(args.json).write_text(text + "\n")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
