"""Threads (README "Threads"): kernels of one compiler called from many threads at once, and
constants changed by one thread while others run kernels.

Real CPU_JIT (real compiler, real cache) and CPU_PYTHON. The batch is long so that OpenMP splits
every row into chunks run at different times: a constant written in place while a call runs
would show up as a row that is partly old and partly new, or as a row computed from one old and
one new constant.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Callable, List

import numpy as np
import pytest

from heterosymnn import SymbolicJITCompiler

METHODS = ("CPU_JIT", "CPU_PYTHON")
DTYPES = ("float32", "float64")
N_NODES, BATCH = 8, 200_000
LINEAR = [("a*num + b", {"a": 1.0, "b": 0.0})] * N_NODES
S1, S2 = {"a": 1.0, "b": 0.0}, {"a": 2.0, "b": 10.0}
FORWARD_VALUES = (1.0, 12.0)  # a*1 + b under S1, S2; a mix gives 2 or 11
BACKWARD_VALUES = (1.0, 2.0)  # grad * a with grad 1
SECONDS = 1.5  # per race test; a call of the whole batch takes about a millisecond on CPU_JIT


def _run_threads(targets: List[Callable[[], None]], timeout: float = 60.0) -> None:
    """Run each target in its own thread and re-raise the first exception one of them raised."""
    errors: List[BaseException] = []

    def guarded(target: Callable[[], None]) -> None:
        try:
            target()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(t,), daemon=True) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    if errors:
        raise errors[0]


@pytest.fixture
def fast_switching():
    """Switch between Python threads often, so that unsynchronised code interleaves."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(previous)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method", METHODS)
def test_no_call_sees_a_mixed_set_of_constants(method, dtype):
    comp = SymbolicJITCompiler(LINEAR, method, dtype=dtype, strict=True)
    ones = np.ones((N_NODES, BATCH), dtype)
    kernels = {"forward": (lambda: comp.forward_kernel(ones), FORWARD_VALUES),
               "backward": (lambda: comp.backward_kernel(ones, ones), BACKWARD_VALUES)}
    readers_done = threading.Event()
    swaps = [0]
    bad: list = []
    seen = set()

    def writer() -> None:
        while not readers_done.is_set():
            for values in (S2, S1):
                for node in range(N_NODES):
                    comp.set_constants(node, **values)  # both constants of one node in one call
                swaps[0] += 1

    def reader(order: tuple) -> Callable[[], None]:
        def run() -> None:
            deadline = time.monotonic() + SECONDS
            while time.monotonic() < deadline:
                for name in order:
                    call, allowed = kernels[name]
                    out = call()
                    first = out[:, 0]
                    wrong = ~(out == first[:, None]).all(axis=1) | ~np.isin(first, allowed)
                    bad.extend((name, int(row), np.unique(out[row]).tolist()) for row in np.flatnonzero(wrong))
                    seen.update((name, float(v)) for v in first)
        return run

    def readers() -> None:
        try:
            _run_threads([reader(("forward", "backward")), reader(("backward", "forward")), reader(("forward",))])
        finally:
            readers_done.set()

    _run_threads([writer, readers])
    assert not bad, f"rows computed from a mix of constants (kernel, row, values): {bad[:10]}"
    assert swaps[0] >= 2, "the constants did not change while the kernels ran"
    # Both sets were seen, so the kernels really ran while the constants changed.
    assert {("forward", 1.0), ("forward", 12.0)} <= seen, seen


@pytest.mark.parametrize("method", METHODS)
def test_a_whole_swap_of_constants_is_seen_whole_by_every_call(method):
    # Two structures (two NumPy groups) alike on ones; unpickling swaps every node at once, so
    # one call must see every row old or every row new.
    configs = [(formula, S1) for formula in ("a*num + b", "a*Abs(num) + b") * (N_NODES // 2)]
    comp = SymbolicJITCompiler(configs, method, dtype="float32", strict=True)
    assert comp.n_structures == 2
    states = []
    for values in (S1, S2):
        for node in range(N_NODES):
            comp.set_constants(node, **values)
        states.append(comp.__reduce__()[2])  # the pickled state: every constant of the layer
    ones = np.ones((N_NODES, BATCH), np.float32)
    readers_done = threading.Event()
    bad: list = []
    seen = set()

    def writer() -> None:
        while not readers_done.is_set():
            for state in states:
                comp.__setstate__(state)

    def reader() -> None:
        deadline = time.monotonic() + SECONDS / 2
        try:
            while time.monotonic() < deadline:
                out = comp.forward_kernel(ones)
                values = np.unique(out).tolist()
                seen.update(values)
                if len(values) != 1 or values[0] not in FORWARD_VALUES:
                    bad.append(values)
        finally:
            readers_done.set()

    _run_threads([writer, reader])
    assert not bad, f"calls that saw old and new constants: {bad[:10]}"
    assert seen == set(FORWARD_VALUES), seen


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method", METHODS)
def test_concurrent_calls_are_bit_identical_to_single_threaded(method, dtype):
    configs = ["relu", "sin", ("a*tanh(w*num) + b", {"a": 1.5, "w": 0.7, "b": -0.25}), "exp(num)",
               ("a*num + b", {"a": 3.0, "b": 1.0}), ("a*tanh(w*num) + b", {"a": -2.0, "w": 3.0, "b": 0.5}),
               "num**2", "sigmoid"]
    comp = SymbolicJITCompiler(configs, method, dtype=dtype, strict=True)
    rng = np.random.default_rng(7)
    n_threads, repeats = 4, 6
    inputs = [(rng.normal(0.0, 2.0, (len(configs), 50_000)).astype(dtype),
               rng.normal(0.0, 1.0, (len(configs), 50_000)).astype(dtype)) for _ in range(n_threads)]
    want = [(comp.forward_kernel(z), comp.backward_kernel(z, g), comp.forward_kernel(z[:, 0].copy()))
            for z, g in inputs]

    def worker(index: int) -> Callable[[], None]:
        z, g = inputs[index]
        forward, backward, column = want[index]
        first = z[:, 0].copy()
        out = np.empty_like(z)

        def run() -> None:
            for _ in range(repeats):
                assert np.array_equal(comp.forward_kernel(z), forward, equal_nan=True)
                assert np.array_equal(comp.backward_kernel(z, g), backward, equal_nan=True)
                assert comp.forward_kernel(z, out=out) is out
                assert np.array_equal(out, forward, equal_nan=True)
                # 1-D calls take the serial path in C while the other threads run parallel ones.
                assert np.array_equal(comp.forward_kernel(first), column, equal_nan=True)
        return run

    _run_threads([worker(i) for i in range(n_threads)])


@pytest.mark.parametrize("method", METHODS)
def test_concurrent_set_constants_lose_no_update(method, fast_switching):
    comp = SymbolicJITCompiler(LINEAR, method, dtype="float64", strict=True)
    ones = np.ones((N_NODES, 1))
    n_threads, rounds = 4, 3000
    lost: list = []

    def setter(first: int) -> Callable[[], None]:
        nodes = range(first, N_NODES, n_threads)  # only this thread writes these nodes

        def run() -> None:
            for i in range(1, rounds + 1):
                node = nodes[i % len(nodes)]
                comp.set_constants(node, a=float(i), b=0.5 * i)
                # What this thread wrote must still be there, in the compiler and in the
                # kernels, whatever the other threads wrote meanwhile.
                kept = comp.constants[node] == {"a": float(i), "b": 0.5 * i}
                if not kept or comp.forward_kernel(ones)[node, 0] != 1.5 * i:
                    lost.append((node, i))
        return run

    _run_threads([setter(first) for first in range(n_threads)])
    assert not lost, f"updates lost (node, value): {lost[:10]} ({len(lost)} in all)"
    final = [float(rounds if node // n_threads == rounds % 2 else rounds - 1) for node in range(N_NODES)]
    assert [c["a"] for c in comp.constants] == final
    assert comp.forward_kernel(ones)[:, 0].tolist() == [1.5 * a for a in final]
