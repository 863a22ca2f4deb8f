"""The constants-gradient row functions: ``out`` as the backward computes it, bit for bit, and
one partial sum per span and slot of the terms ``g * df/dp_k`` (loss: ``dL/dp_k``).

Terms are checked one by one against NumPy (a call on one element returns its term exactly),
then the span sums of a whole-row call against float64 sums of those terms.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from codegen_support import (
    ACTIVATION, CORPUS, DTYPES, SPAN_ELEMENTS, activation_inputs, check, grad_inputs, loss_inputs,
)

WITH_SLOTS = [s for s in CORPUS if s.n_slots]
IDS = [f"{s.mode[0]}-{str(s.expr)[:40]}" for s in WITH_SLOTS]
#: Span sums against the sum of the same terms computed one at a time (scalar math, where
#: a whole row uses vector math): relative to the sum of |term|.
SUM_RTOL = {"float32": 1e-5, "float64": 1e-12}


def _inputs(structure, dtype):
    """The codegen inputs without finite values near overflow: there a product's order decides
    between inf*0 = NaN and 0 (the kernels print products in another order than NumPy's)."""
    limit = 1e30 if dtype == "float32" else 1e300
    if structure.mode == ACTIVATION:
        a = activation_inputs(dtype)
        a = a[~(np.isfinite(a) & (np.abs(a) >= limit))]
        return a, None, grad_inputs(a.size, dtype)
    a, b = loss_inputs(dtype)
    keep = ~(np.isfinite(a) & (np.abs(a) >= limit)) & ~(np.isfinite(b) & (np.abs(b) >= limit))
    return a[keep], b[keep], None


def test_every_structure_with_constants_has_one(built):
    for dtype in DTYPES:
        module = built[dtype].cmodule
        assert set(module.constants_grad) == {s.key for s in WITH_SLOTS}
        assert not module.constants_grad_problems


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("structure", WITH_SLOTS, ids=IDS)
def test_terms_span_sums_and_out(built, structure, dtype):
    mod = built[dtype]
    a, b, g = _inputs(structure, dtype)
    assert a.size > 2 * SPAN_ELEMENTS and a.size % SPAN_ELEMENTS  # several spans, a short last one
    out, sums = mod.cgrad(structure, a, b, g)
    np.testing.assert_array_equal(out, mod.row(structure, "bwd", a, b, g))

    def one(i):
        pick = slice(i, i + 1)
        return mod.cgrad(structure, a[pick], None if b is None else b[pick], None if g is None else g[pick])[1][0]
    terms = np.array([one(i) for i in range(a.size)])  # (elements, slots), exact float64 of each term
    for k, derivative in enumerate(structure.constant_derivatives):
        slot = dataclasses.replace(structure, derivative=derivative)
        check(terms[:, k].astype(dtype), slot, "bwd", dtype, a, b, g, what=f"d/dp{k}")
        for span in range(sums.shape[0]):
            part = terms[span * SPAN_ELEMENTS:(span + 1) * SPAN_ELEMENTS, k]
            with np.errstate(invalid="ignore"):
                expected, scale = part.sum(), np.abs(part).sum()
            got = sums[span, k]
            if not np.isfinite(scale):  # an inf or NaN term: the sum is inf or NaN in any order
                assert got == expected or (np.isnan(got) and np.isnan(expected)), (span, k, got, expected)
            else:
                assert abs(got - expected) <= SUM_RTOL[dtype] * scale, (span, k, got, expected)


def test_span_sums_do_not_depend_on_alignment(built):
    """The sum's order is the source's: the same span at another address gives the same bits."""
    mod = built["float32"]
    structure = next(s for s in WITH_SLOTS if s.mode == ACTIVATION)
    rng = np.random.default_rng(3)
    base = rng.normal(size=SPAN_ELEMENTS + 8).astype(np.float32)
    grad = rng.normal(size=base.size).astype(np.float32)
    reference = mod.cgrad(structure, base[:SPAN_ELEMENTS].copy(), None, grad[:SPAN_ELEMENTS].copy())[1]
    for shift in range(1, 8):
        a = np.empty(SPAN_ELEMENTS + shift, np.float32)[shift:]
        a[:] = base[:SPAN_ELEMENTS]
        g = np.empty(SPAN_ELEMENTS + shift, np.float32)[shift:]
        g[:] = grad[:SPAN_ELEMENTS]
        assert mod.cgrad(structure, a, None, g)[1].tobytes() == reference.tobytes()


LOSS_SLOTS = [s for s in WITH_SLOTS if s.mode != ACTIVATION]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("structure", LOSS_SLOTS, ids=[f"{s.mode[0]}-{str(s.expr)[:40]}" for s in LOSS_SLOTS])
def test_a_loss_weighs_by_g_when_given(built, structure, dtype):
    """With ``g``, a loss's backward and constants-gradient functions give ``g * dL/dy_pred`` (the
    unweighted result times ``g``, bit for bit) and the span sums of ``g * dL/dp_k``; with
    ``g`` NULL what they always gave (the other tests)."""
    mod = built[dtype]
    a, b, _ = _inputs(structure, dtype)
    g = grad_inputs(a.size, dtype)
    plain = mod.row(structure, "bwd", a, b)
    with np.errstate(invalid="ignore", over="ignore"):
        weighted_plain = (g * plain).astype(dtype)
    weighted = mod.row(structure, "bwd", a, b, g)
    np.testing.assert_array_equal(weighted, weighted_plain)
    out, sums = mod.cgrad(structure, a, b, g)
    np.testing.assert_array_equal(out, weighted)
    # Each weighted term is the unweighted one times g, rounded once in the layer's dtype.
    unweighted = np.array([mod.cgrad(structure, a[i:i + 1], b[i:i + 1])[1][0] for i in range(a.size)])
    with np.errstate(invalid="ignore", over="ignore"):
        terms = (g[:, None] * unweighted.astype(dtype)).astype(np.float64)
    for k in range(structure.n_slots):
        for span in range(sums.shape[0]):
            part = terms[span * SPAN_ELEMENTS:(span + 1) * SPAN_ELEMENTS, k]
            with np.errstate(invalid="ignore"):
                expected, scale = part.sum(), np.abs(part).sum()
            got = sums[span, k]
            if not np.isfinite(scale):
                assert got == expected or (np.isnan(got) and np.isnan(expected)), (span, k, got, expected)
            else:
                assert abs(got - expected) <= SUM_RTOL[dtype] * scale, (span, k, got, expected)
