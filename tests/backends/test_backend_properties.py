"""Random formulas, every backend agrees.

Random layers over the whole formula language (see ``formula_strategies``), random
shapes and inputs (+-0, NaN, +-inf, denormals, exp overflow), float32 and float64,
activations and losses:

* CPU_PYTHON and CPU_JIT each agree, forward and backward, with an independent NumPy
  evaluation of the parsed expression (``rounding_bounds``): the same NaN/inf outcome
  wherever that outcome is decided, values within the rounding-error bound;
* CPU_JIT agrees with CPU_PYTHON directly, by the same rule;
* the symbolic derivative agrees with central finite differences of the forward, away
  from kinks and where a finite difference means something.

The tolerance is not a constant: every point carries a first-order bound of the
rounding error any correct evaluation can make (libm and NumPy differ by a few ulp per
call, CSE and printing reorder operations, cancellations and steep functions amplify),
and points whose NaN/inf outcome can legitimately differ (a Piecewise condition or a
domain edge within rounding of the input) are left out; ``rounding_bounds`` says why.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import List, Optional, Sequence, Tuple

import numpy as np
import pytest
import sympy as sp
from hypothesis import assume, event, given, note, settings
from hypothesis import strategies as st

import formula_strategies as fs
import rounding_bounds
from fuzzing import examples
from heterosymnn import CompilationWarning, FormulaParsingError, SymbolicJITCompiler, ToolchainNotFoundError
from heterosymnn.symbolic.layer import UNFORESEEN_FAILURE, AnalyzedLayer, analyze
from heterosymnn.symbolic.structure import Structure

DTYPES = ("float32", "float64")
MODES = ("activation", "loss")
#: The gradient fed to an activation's backward, as a symbol of the reference expression.
GRAD = sp.Symbol("hs_test_grad", real=True)


def _have_toolchain() -> bool:
    from heterosymnn.toolchains import find_toolchain
    try:
        find_toolchain()
    except ToolchainNotFoundError:
        return False
    return True


# -- layers -----------------------------------------------------------------------------------------
def usable(layer: fs.Layer) -> Tuple[List[object], AnalyzedLayer]:
    """The layer's nodes the parser accepts (a random formula may be legitimately rejected,
    e.g. ``log(-3.75, 2)`` is complex), and their analysis."""
    kept = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompilationWarning)
        for config in layer.configs:
            try:
                analyze([config], layer.mode)
            except FormulaParsingError as error:
                assert UNFORESEEN_FAILURE not in str(error), str(error)
                continue
            kept.append(config)
        assume(kept)
        return kept, analyze(kept, layer.mode)


def _node(analyzed: AnalyzedLayer, row: int) -> Tuple[Structure, Tuple[float, ...]]:
    plan = analyzed.plan
    return analyzed.structures[plan.node_structure[row]], plan.node_values[row]


def references(analyzed: AnalyzedLayer, which: str, dtype: str, a: np.ndarray,
               b: Optional[np.ndarray] = None) -> List[rounding_bounds.Evaluation]:
    """Per row, the reference evaluation of the forward or the backward (``grad * f'`` for an
    activation, ``dL/dy_pred`` for a loss) on ``(rows, cols)`` inputs."""
    out = []
    for row in range(a.shape[0]):
        structure, values = _node(analyzed, row)
        env = dict(zip(structure.slots, values))
        env.update(zip(structure.variables, (a[row],) if structure.mode == "activation" else (a[row], b[row])))
        if which == "forward":
            expr = structure.expr
        elif structure.mode == "activation":
            # unevaluated: grad * 0 is NaN for a NaN or infinite gradient, as the kernels compute it
            expr, env[GRAD] = sp.Mul(GRAD, structure.derivative, evaluate=False), b[row]
        else:
            expr = structure.derivative
        out.append(rounding_bounds.evaluate(expr, env, dtype, a[row].shape))
    return out


def as_rows(array: np.ndarray, n_rows: int) -> np.ndarray:
    return np.asarray(array).reshape(n_rows, -1)


def assert_correct(got: np.ndarray, refs: Sequence[rounding_bounds.Evaluation], configs, what: str,
                   inputs: Sequence[np.ndarray]) -> None:
    """Every row of ``got`` is a correct evaluation of its node (see ``rounding_bounds``)."""
    got = as_rows(got, len(refs))
    problems = []
    for row, ref in enumerate(refs):
        bad = np.flatnonzero(rounding_bounds.disagreements(got[row], ref))
        if bad.size:
            at = bad[:4]
            problems.append(f"node {row} {configs[row]!r}: at inputs {[x[row][at] for x in inputs]}: got "
                            f"{got[row][at]!r}, reference {ref.value[at]!r} (bound {ref.bound[at]!r})")
    assert not problems, f"{what}:\n  " + "\n  ".join(problems)


def assert_agree(got: np.ndarray, other: np.ndarray, refs, configs, what: str, inputs) -> None:
    """Two backends agree with each other: the same outcome where it is decided, values within
    the sum of their bounds."""
    other = as_rows(other, len(refs))
    twins = [rounding_bounds.Evaluation(other[row], ref.bound, ref.undecided, []) for row, ref in enumerate(refs)]
    assert_correct(got, twins, configs, what, inputs)


def _coverage(refs) -> None:
    """Report how much of the example was compared (Hypothesis statistics show the events)."""
    total = sum(r.undecided.size for r in refs)
    if total:
        decided = sum(int((~r.undecided).sum()) for r in refs) / total
        event(f"decided points: {'all' if decided == 1 else '>= 90%' if decided >= 0.9 else '< 90%'}")


# -- inputs -----------------------------------------------------------------------------------------
@st.composite
def layer_inputs(draw, mode: str, dtype: str, n_rows: int):
    """(a, b, batch): a = z and b = grad for activations, a = y_pred and b = y_true for losses."""
    batch = draw(fs.batches())
    a, b = draw(fs.input_arrays(n_rows, dtype, batch, count=2))
    return a, b, batch


def run_backend(method: str, configs, mode: str, dtype: str, a: np.ndarray, b: np.ndarray):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompilationWarning)
        comp = SymbolicJITCompiler(configs, method, mode=mode, dtype=dtype, strict=True)
    assert comp.calculation_method == method
    if mode == "activation":
        forward, backward = comp.forward_kernel(a), comp.backward_kernel(a, b)
    else:
        forward, backward = comp.forward_kernel(a, b), comp.backward_kernel(a, b)
    for result in (forward, backward):
        assert result.shape == a.shape and result.dtype == np.dtype(dtype)
    return forward, backward


@dataclasses.dataclass
class Checked:
    """One backend run on a random layer, already checked against the reference."""

    configs: List[object]
    a: np.ndarray
    b: np.ndarray
    forward: np.ndarray
    backward: np.ndarray
    fwd_refs: List[rounding_bounds.Evaluation]
    bwd_refs: List[rounding_bounds.Evaluation]


def check_backend(method: str, layer: fs.Layer, dtype: str, data) -> Checked:
    configs, analyzed = usable(layer)
    n = len(configs)
    a, b, _ = data.draw(layer_inputs(layer.mode, dtype, n), label="inputs")
    forward, backward = run_backend(method, configs, layer.mode, dtype, a, b)
    a2, b2 = as_rows(a, n), as_rows(b, n)
    fwd_refs = references(analyzed, "forward", dtype, a2, b2)
    bwd_refs = references(analyzed, "backward", dtype, a2, b2)
    _coverage(fwd_refs + bwd_refs)
    names = ("z", "grad") if layer.mode == "activation" else ("y_pred", "y_true")
    note(f"{names[0]} = {a!r}\n{names[1]} = {b!r}")
    assert_correct(forward, fwd_refs, configs, f"{method} forward ({dtype})", (a2, b2))
    assert_correct(backward, bwd_refs, configs, f"{method} backward ({dtype})", (a2, b2))
    return Checked(configs, a, b, forward, backward, fwd_refs, bwd_refs)


# -- CPU_PYTHON against the independent reference ---------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=examples(60))
@given(data=st.data(), dtype=st.sampled_from(DTYPES))
def test_cpu_python_is_a_correct_evaluation(mode, dtype, data):
    layer = data.draw(fs.layers(mode, max_nodes=8, max_formulas=4), label="layer")
    check_backend("CPU_PYTHON", layer, dtype, data)


# -- CPU_JIT against the reference and against CPU_PYTHON -----------------------------------------------------
@pytest.mark.skipif(not _have_toolchain(), reason="no usable C toolchain for CPU_JIT")
@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=examples(20))
@given(data=st.data(), dtype=st.sampled_from(DTYPES))
def test_cpu_jit_agrees_with_cpu_python(mode, dtype, data):
    """One CPU_JIT build per example, holding a whole random layer."""
    layer = data.draw(fs.layers(mode, min_nodes=4, max_nodes=12, max_formulas=6), label="layer")
    jit = check_backend("CPU_JIT", layer, dtype, data)
    forward, backward = run_backend("CPU_PYTHON", jit.configs, layer.mode, dtype, jit.a, jit.b)
    n = len(jit.configs)
    inputs = (as_rows(jit.a, n), as_rows(jit.b, n))
    assert_agree(jit.forward, forward, jit.fwd_refs, jit.configs, f"CPU_JIT vs CPU_PYTHON forward ({dtype})", inputs)
    assert_agree(jit.backward, backward, jit.bwd_refs, jit.configs, f"CPU_JIT vs CPU_PYTHON backward ({dtype})",
                 inputs)


# -- the derivative against finite differences ----------------------------------------------------------------
#: Relative step of the central differences: the truncation error (~h**2 f''') and the rounding
#: error (~eps |f| / h) are both far below the tolerance at 1e-4; what remains is measured.
FD_STEP = 1e-4


def finite_difference_mismatches(structure: Structure, values, x: np.ndarray, other: Optional[np.ndarray],
                                 derivative: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(compared, wrong) masks over ``x`` for a float64 ``derivative`` of ``structure``.

    The forward is evaluated at x - h, x - h/2, x, x + h/2, x + h with the reference
    evaluator. A point is compared only when all five are finite and decided and took the
    same branch of every non-smooth node (no kink in between), when the symbolic
    derivative varies by less than 10 % over them (no pole in between) and when the two
    estimates, with h and h/2, agree to 10 % (otherwise h is not small against the
    function's curvature here). The tolerance is then what the estimates
    themselves can be off by: their difference (truncation), the forward's rounding bound
    over the step, and the derivative's own rounding bound.
    """
    h = FD_STEP * np.maximum(1.0, np.abs(x))
    offsets = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])[:, None]
    stencil = x[None, :] + offsets * h[None, :]
    env = dict(zip(structure.slots, values))
    variables = structure.variables
    env[variables[0]] = stencil
    if len(variables) > 1:
        env[variables[1]] = np.broadcast_to(other, stencil.shape)
    forward = rounding_bounds.evaluate(structure.expr, env, "float64", stencil.shape)
    f, bound = forward.value, forward.bound
    same_branches = np.ones(x.shape, bool)
    for taken in forward.branches:
        taken = np.broadcast_to(taken, stencil.shape)
        same_branches &= np.all(taken == taken[2], axis=0)
    usable_points = (np.all(np.isfinite(f), axis=0) & ~np.any(forward.undecided, axis=0) & same_branches
                     & np.all(np.isfinite(bound), axis=0))
    with np.errstate(all="ignore"):
        wide = (f[4] - f[0]) / (stencil[4] - stencil[0])
        narrow = (f[3] - f[1]) / (stencil[3] - stencil[1])
        truncation = np.abs(wide - narrow)
        noise = 2 * np.max(bound, axis=0) / (stencil[3] - stencil[1])
        usable_points &= truncation <= 0.1 * np.abs(narrow) + noise
        # the derivative itself must be nearly constant over the stencil: no pole, no near-kink in between
        slopes = rounding_bounds.evaluate(structure.derivative, env, "float64", stencil.shape)
        exact = rounding_bounds.Evaluation(slopes.value[2], slopes.bound[2], slopes.undecided[2], [])
        usable_points &= (~np.any(slopes.undecided, axis=0) & np.all(np.isfinite(slopes.value), axis=0)
                          & np.isfinite(exact.bound) & np.isfinite(derivative)
                          & np.all(np.abs(slopes.value - slopes.value[2]) <= 0.1 * np.abs(slopes.value[2])
                                   + 2 * np.max(slopes.bound, axis=0), axis=0))
        tolerance = 2 * truncation + 4 * noise + 4 * exact.bound + 1e-9 * np.abs(narrow)
        wrong = usable_points & ~(np.abs(derivative - narrow) <= tolerance)
    return usable_points, wrong


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=examples(50))
@given(data=st.data())
def test_backward_matches_finite_differences(mode, data):
    layer = data.draw(fs.layers(mode, max_nodes=6, max_formulas=3), label="layer")
    configs, analyzed = usable(layer)
    n = len(configs)
    points = st.lists(st.floats(-6, 6) | st.sampled_from([0.3, -1.7, 2.5, 10.0, -25.0]), min_size=8, max_size=8)
    x = np.array([data.draw(points, label="points") for _ in range(n)])
    other = np.array([data.draw(points, label="y_true") for _ in range(n)]) if mode == "loss" else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompilationWarning)
        comp = SymbolicJITCompiler(configs, "CPU_PYTHON", mode=mode, dtype="float64")
    derivative = (comp.backward_kernel(x, np.ones_like(x)) if mode == "activation"
                  else comp.backward_kernel(x, other))
    problems, compared = [], 0
    for row in range(n):
        structure, values = _node(analyzed, row)
        used, wrong = finite_difference_mismatches(structure, values, x[row], None if other is None else other[row],
                                                   derivative[row])
        compared += int(used.sum())
        if wrong.any():
            at = np.flatnonzero(wrong)[:4]
            problems.append(f"node {row} {configs[row]!r} ({structure.derivative}): at {x[row][at]!r} "
                            f"derivative {derivative[row][at]!r}")
    event(f"points compared with finite differences: {'none' if not compared else 'some'}")
    assert not problems, "derivative disagrees with finite differences:\n  " + "\n  ".join(problems)


def test_finite_difference_check_catches_a_wrong_derivative():
    """The finite-difference comparison is not vacuous: a derivative off by 1 % fails it."""
    structure = analyze([("a*sin(num) + num**3", {"a": 2.0})]).structures[0]
    x = np.linspace(-3, 3, 13)
    right = 2.0 * np.cos(x) + 3 * x ** 2
    used, wrong = finite_difference_mismatches(structure, (2.0,), x, None, right)
    assert used.all() and not wrong.any()
    used, wrong = finite_difference_mismatches(structure, (2.0,), x, None, right * 1.01)
    assert wrong[np.abs(right) > 1e-3].all()


def test_finite_difference_check_skips_kinks():
    structure = analyze(["Abs(num - 1) + Max(num, 0)"]).structures[0]
    x = np.array([1.0, 0.0, 1 + 1e-6, 3.0])
    used, _ = finite_difference_mismatches(structure, (), x, None, np.zeros(4))
    np.testing.assert_array_equal(used, [False, False, False, True])


# -- regressions found by the properties above ------------------------------------------------------------
@pytest.mark.parametrize("config, z, expected", [
    # SymPy cannot prove a**num or log(num) real, so it differentiated Abs and sign into re/im,
    # atan2 or an unevaluated Derivative (the node was rejected), or into 0/0 at the kink.
    (("Abs(a**num)", {"a": 2.0}), [0.0, 1.0], [np.log(2.0), 2 * np.log(2.0)]),
    ("Abs(log(num))", [1.0, np.e, 1 / np.e], [0.0, 1 / np.e, -np.e]),
    ("Abs(asin(num))", [0.0, 0.5, -0.5], [0.0, 1 / np.sqrt(0.75), -1 / np.sqrt(0.75)]),
    ("sign(sqrt(num)) + num", [0.0, 4.0], [1.0, 1.0]),
    ("Abs(Abs(num) - 1)", [1.0, 2.0, -2.0, 0.5], [0.0, 1.0, -1.0, -1.0]),
])
def test_abs_and_sign_of_arguments_sympy_cannot_prove_real(config, z, expected):
    comp = SymbolicJITCompiler([config], "CPU_PYTHON", dtype="float64")
    z = np.array([z])
    np.testing.assert_allclose(comp.backward_kernel(z, np.ones_like(z))[0], expected, rtol=1e-14, atol=0)


def test_piecewise_condition_on_constants_only_combined_with_one_on_the_input():
    """CPU_PYTHON stacked a constant's condition (a column) and the input's (a block) into
    one array for ``|``/``&`` and raised ValueError for any batch."""
    config = ("Piecewise((-3.75, 0 < z <= 2), (z, (delta != e) | (z < b)))", {"b": 0.0, "delta": 0.3, "e": -7.0})
    comp = SymbolicJITCompiler([config, config], "CPU_PYTHON", dtype="float64")
    z = np.array([[1.5, 4.0, -1.0], [0.0, 3.0, np.nan]])
    np.testing.assert_array_equal(comp.forward_kernel(z), [[-3.75, 4.0, -1.0], [0.0, 3.0, np.nan]])
    and_config = ("Piecewise((z, (delta != e) & (z < b)), (1, True))", {"b": 0.0, "delta": 0.3, "e": -7.0})
    comp = SymbolicJITCompiler([and_config], "CPU_PYTHON", dtype="float64")
    np.testing.assert_array_equal(comp.forward_kernel(np.array([[-1.0, 1.0]])), [[-1.0, 1.0]])


def test_reference_bound_accepts_rounding_and_rejects_real_errors():
    """The comparison is not vacuous: a cancellation's rounding passes (expm1 against
    exp - 1 at 1e-8), a relative error of 1e-9 where nothing cancels does not, nor does
    another NaN/inf outcome."""
    structure = analyze(["exp(num) - 1"]).structures[0]
    z = np.array([1e-8, 1.0, 800.0, np.nan, -np.inf])
    reference = rounding_bounds.evaluate(structure.expr, {structure.variables[0]: z}, "float64", z.shape)
    with np.errstate(over="ignore"):
        accurate = np.expm1(z)
    assert not rounding_bounds.disagreements(accurate, reference).any()
    off = accurate.copy()
    off[1] *= 1 + 1e-9
    off[2] = 1e308
    np.testing.assert_array_equal(rounding_bounds.disagreements(off, reference), [False, True, True, False, False])
