"""What the printer, the lowering and the source renderers emit (no compiler)."""
from __future__ import annotations

import dataclasses
import re

import pytest
import sympy as sp

from codegen_support import CORPUS, P, X, YP, YT, make
from heterosymnn.codegen import (
    CModule, CPrinter, UnsupportedExpressionError, lower, render_c, render_c_module,
    render_runtime, row_function_names,
)
from heterosymnn.symbolic.grammar import EVALUABLE_NODES, unsupported_nodes
from heterosymnn.symbolic.structure import ACTIVATION, LOSS


def show(expr, dtype="float32", **names) -> str:
    symbols = {X: "x", YP: "yp", YT: "yt", **{p: f"c{i}" for i, p in enumerate(P)}}
    return CPrinter(dtype, {**symbols, **names}).expression(expr)


@pytest.mark.parametrize("expr, f32, f64", [
    (sp.Integer(2), "2.0f", "2.0"),
    (sp.Rational(1, 3), "0.333333343f", "0.33333333333333331"),
    (sp.pi, "3.14159274f", "3.1415926535897931"),
    (sp.E, "2.71828175f", "2.7182818284590451"),
    (sp.GoldenRatio, "1.61803401f", "1.6180339887498949"),
    (sp.Float("0.1"), "0.100000001f", "0.10000000000000001"),
    (sp.Float("1e-300"), "0.0f", "1e-300"),
    (sp.Float("1e300"), "((float)INFINITY)", "1.0000000000000001e+300"),
    (-sp.Float("1e300"), "(-((float)INFINITY))", "-1.0000000000000001e+300"),
])
def test_literals_have_full_precision_for_the_dtype(expr, f32, f64):
    assert show(expr, "float32") == f32
    assert show(expr, "float64") == f64


def test_slots_and_variables_print_as_locals():
    assert show(P[0] * sp.tanh(P[1] * X) + P[2], "float64") == "c0*tanh(x*c1) + c2"
    assert show(YP - YT) == "yp - yt"
    with pytest.raises(UnsupportedExpressionError, match="no C name"):
        show(sp.Symbol("w") * X)


@pytest.mark.parametrize("expr, text", [
    (X**2, "(x*x)"),
    (X**3, "(x*x*x)"),
    (X**4, "((x*x)*(x*x))"),
    (X**5, "powf(x, 5.0f)"),
    (X**-1, "(1.0f/x)"),
    (X**-2, "((1.0f/x)*(1.0f/x))"),
    (X**sp.Float(2.0), "(x*x)"),
    (X**sp.Rational(1, 2), "sqrtf(x)"),
    (X**sp.Float(0.5), "sqrtf(x)"),            # NumPy's fast path is sqrt too
    (X**sp.Rational(-1, 2), "(1.0f/sqrtf(x))"),  # what lambdify prints
    (X**sp.Float(-0.5), "powf(x, -0.5f)"),     # np.power: pow() semantics
    (X**sp.Rational(1, 3), "powf(x, 0.333333343f)"),  # never cbrt: NaN for x < 0
    (X**sp.Float(2.5), "powf(x, 2.5f)"),
    (X**P[0], "powf(x, c0)"),
    (2 * X / P[0]**2, "2.0f*x/(c0*c0)"),
    (X / 3, "0.333333343f*x"),
])
def test_powers_and_quotients(expr, text):
    assert show(expr) == text


def test_math_function_names_follow_the_dtype():
    expr = sp.exp(X) + sp.log(X) + sp.erf(X) + sp.Abs(X) + sp.atanh(X)
    f32, f64 = show(expr, "float32"), show(expr, "float64")
    for name in ("exp", "log", "erf", "fabs", "atanh"):
        assert f"{name}f(x)" in f32 and f"{name}(x)" in f64 and f"{name}f(x)" not in f64


def test_semantic_helpers_and_their_definitions():
    printer = CPrinter("float64", {X: "x", P[0]: "c0"})
    text = printer.expression(sp.Max(X, 1, P[0]) + sp.Min(X, 0) + sp.sign(X)
                              + sp.Heaviside(X) + sp.Heaviside(X, 0))
    # NaN anywhere still wins; a literal (never NaN) takes the one-blend helper.
    assert "hs_max_k_f64(1.0, hs_max_f64(x, c0))" in text
    assert "hs_min_k_f64(0.0, x)" in text
    assert "hs_heaviside_f64(x, 0.5)" in text and "hs_heaviside0_f64(x)" in text
    defs = printer.helper_definitions()
    for kind in ("heaviside", "heaviside0", "max", "max_k", "min_k", "sign"):
        assert f"HS_INLINE double hs_{kind}_f64(" in defs
    assert "fmax" not in defs  # fmax drops NaN, np.maximum propagates it


def test_exp_of_the_stable_forms_minus_abs_is_one_call():
    # The named sigmoid's e^-|u|, spelled exp(Piecewise((-u, u >= 0), (u, True))): GCC
    # vectorises exp(c ? -u : u) as two exp calls and a blend; exp(-fabs(u)) is one.
    minus_abs = sp.Piecewise((-P[0] * X, P[0] * X >= 0), (P[0] * X, True))
    sigmoid = sp.Piecewise((1 / (1 + sp.exp(minus_abs)), P[0] * X >= 0),
                           (sp.exp(minus_abs) / (1 + sp.exp(minus_abs)), True))
    s = make(ACTIVATION, X * sigmoid)  # the named swish
    source = render_c([s], "float32")
    fwd, bwd = row_function_names(s.key, "float32")
    for name in (fwd, bwd):
        body = source[source.index(f"void {name}("):]
        body = body[:body.index("\n}\n")]
        # One exp per element, backward too: SymPy's exp(2*w) there is t*t of exp(w).
        assert body.count("expf(") == 1 and "fabsf(t0)" in body and "expf((" not in body, body
    # Only where exp makes -0 and +0 alike: the Piecewise itself prints as written.
    assert show(minus_abs) == "((x*c0 >= 0.0f) ? -x*c0 : x*c0)"


def test_piecewise_is_nested_ternaries_with_nan_default():
    pw = sp.Piecewise((X, sp.And(X > 0, X < 1)), (X**2, X < -1))
    assert show(pw) == ("(((x > 0.0f) & (x < 1.0f)) ? x : "
                        "((x < -1.0f) ? (x*x) : ((float)NAN)))")
    assert show(sp.Or(X < -1, sp.Eq(X, 2))) in ("((x < -1.0f) | (x == 2.0f))",
                                                "((x == 2.0f) | (x < -1.0f))")
    with_default = sp.Piecewise((X, X > 0), (-X, True))
    assert show(with_default) == "((x > 0.0f) ? x : -x)"
    assert show(sp.Not(sp.And(X > 0, X < 1))) == "(!((x > 0.0f) & (x < 1.0f)))"
    assert show(sp.Ne(X, P[0])) == "(x != c0)"
    assert show(sp.true) == "1" and show(sp.false) == "0"


@pytest.mark.parametrize("expr", [sp.gamma(X), sp.oo * X, sp.factorial(X), sp.I * X,
                                  sp.DiracDelta(X), sp.floor(X), sp.atan2(X, P[0]),
                                  sp.Mod(X, 3), sp.nan + X])
def test_unsupported_nodes_raise_instead_of_printing_a_comment(expr):
    with pytest.raises(UnsupportedExpressionError):
        show(expr)


def test_printer_family_hooks_are_overridable():
    class DevicePrinter(CPrinter):
        helper_qualifier = "static __device__ __forceinline__"
        helper_prefix = "dev_"

        def math_name(self, base):
            return "__" + super().math_name(base)

    printer = DevicePrinter("float32", {X: "x"})
    assert printer.expression(sp.Max(sp.sin(X), 0)) == "dev_max_k_f32(0.0f, __sinf(x))"
    assert printer.helper_definitions().startswith(
        "static __device__ __forceinline__ float dev_max_k_f32(float k, float x)")


def test_lowering_shares_subexpressions_and_binds_power_bases():
    low = lower([sp.diff(sp.tanh(X) * 3, X)])
    assert [str(v) for _, v in low.temps] == ["tanh(num)"]
    low = lower([sp.exp((X + 1)**2) + (X + 1)**3])
    assert [str(v) for _, v in low.temps] == ["num + 1"]
    assert str(low.results[0]) == "t0**3 + exp(t0**2)"


def test_corpus_covers_every_node_type_a_formula_may_contain():
    seen = set()
    for s in CORPUS:
        for expr in (s.expr, s.derivative):
            assert not unsupported_nodes(expr), (s.expr, unsupported_nodes(expr))
            seen |= {type(n) for n in sp.preorder_traversal(expr)}
    # BooleanFalse never survives SymPy's own simplification of a condition;
    # it is printed above.
    wanted = set(EVALUABLE_NODES) - {sp.logic.boolalg.BooleanFalse}
    missing = [t.__name__ for t in wanted if not any(issubclass(s, t) for s in seen)]
    assert not missing


def test_row_functions_hoist_used_slots_and_skip_unread_pointers():
    s = make(ACTIVATION, P[0] * sp.tanh(P[1] * X) + P[2])
    source = render_c([s], "float32")
    fwd, bwd = row_function_names(s.key, "float32")
    assert fwd == f"hs_{s.key[:24]}_f32_fwd"
    body = source[source.index(f"void {bwd}("):]
    assert "const float c0 = (float)p[0];" in body
    assert "c2" not in body  # the derivative does not use p2: no unused local
    assert "(void)b;" in body and "g[i]*(" in body
    assert re.search(r"HS_SIMD_LOOP\n\s+for \(int64_t i = 0; i < \(hs_count & -\(int64_t\)HS_BLOCK_F\d+\); \+\+i\)", body)  # one block loop
    loss = render_c([make(LOSS, (YP - YT)**2)], "float64")
    assert "const double yt = b[i];" in loss and "(void)g; (void)p;" in loss


def test_boolean_temporaries_are_ints():
    cond = sp.And(X > 0, X < 1)
    expr = sp.Piecewise((X, cond), (0, True)) + sp.Piecewise((sp.sin(X), cond), (1, True))
    source = render_c([make(ACTIVATION, expr, sp.Integer(0))], "float64")
    assert "const int t0 = ((x > 0.0) & (x < 1.0));" in source


def test_sin_and_cos_of_one_argument_go_through_aliases_only_then():
    both = render_c([make(ACTIVATION, X * sp.sin(X))], "float32")  # bwd: sin + x*cos
    assert "hs_cos_f32(x)" in both and '__asm__("cosf")' in both
    assert "#define hs_sin_f32 sinf" in both
    alone = render_c([make(ACTIVATION, sp.sin(2 * X))], "float32")
    assert "sinf(2.0f*x)" in alone and "hs_sin" not in alone


def test_module_table_cdef_and_deduplication():
    structures = CORPUS[:5] + CORPUS[:2]
    module = render_c_module(structures, "float64")
    assert isinstance(module, CModule) and len(module.functions) == 5
    names = [n for pair in module.functions.values() for n in pair]
    declared = re.findall(r"void (\w+)\(int64_t n, const double \*a, const double \*b, "
                          r"const double \*g, double \*out, const double \*p\);", module.function_cdef)
    assert declared == names
    # cffi sees the export tables only (no Python wrapper per function): every function,
    # the constants-gradient ones included, in the order of the structures' keys.
    exported = [name for key, pair in module.functions.items()
                for name in (*pair, module.constants_grad.get(key)) if name]
    assert len(exported) > len(names)
    assert module.cdef == (f"extern void (*const hs_row_addresses[{len(exported)}])(void);\n"
                           f"extern const char *const hs_row_names[{len(exported)}];\n")
    assert re.findall(r'"(hs_\w+)",', module.source) == exported
    assert all(module.source.count(f"void {n}(") == 1 for n in names)
    assert module.source == render_c(structures, "float64")
    assert module.uses_vector_math and "tanh" in module.math_functions
    with pytest.raises(dataclasses.FrozenInstanceError):
        module.source = ""
    with pytest.raises(ValueError, match="dtype"):
        render_c_module(structures, "float16")


def test_runtime_source_carries_its_thresholds():
    from heterosymnn.codegen.c_runtime import SPAN_ELEMENTS

    rt = render_runtime("float64", parallel_min_elements=10, chunk_elements=2 * SPAN_ELEMENTS)
    assert "#define HS_PARALLEL_MIN_ELEMENTS_F64 10" in rt.source
    assert f"#define HS_CHUNK_ELEMENTS_F64 {2 * SPAN_ELEMENTS}" in rt.source
    assert (rt.run_name, rt.threads_name, rt.row_fn_type) == (
        "hs_run_f64", "hs_threads_f64", "hs_row_fn_f64")
    assert (rt.cgrad_name, rt.features_last_name, rt.cgrad_fn_type) == (
        "hs_run_cgrad_f64", "hs_run_fl_f64", "hs_cg_fn_f64")
    assert "int hs_run_f64(const hs_row_fn_f64 *fns" in rt.cdef
    assert "int hs_run_cgrad_f64(" in rt.cdef and "int hs_run_fl_f64(" in rt.cdef
    with pytest.raises(ValueError):
        render_runtime("float32", chunk_elements=0)
    with pytest.raises(ValueError, match="multiple of"):  # a span must never be split between tasks
        render_runtime("float32", chunk_elements=SPAN_ELEMENTS + 1)


def test_source_is_deterministic_across_orders_and_processes():
    """The source feeds the cache key: no dependence on order or hash seed."""
    import os
    import subprocess
    import sys

    subset = CORPUS[:6]
    here = render_c(subset, "float32")
    assert render_c(subset[::-1], "float32") == here
    script = ("import sys; sys.path[:0] = sys.argv[1:]\n"
              "from codegen_support import CORPUS\n"
              "from heterosymnn.codegen import render_c\n"
              "sys.stdout.write(render_c(CORPUS[:6], 'float32'))\n")
    support_dir = os.path.dirname(os.path.abspath(__file__))
    package_root = os.path.dirname(os.path.dirname(support_dir))
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", script, support_dir, package_root],
                         capture_output=True, text=True, env=env, timeout=120, check=True)
    assert out.stdout == here


def test_unprintable_structure_names_itself():
    bad = dataclasses.replace(make(ACTIVATION, sp.sin(X)), derivative=sp.gamma(X))
    with pytest.raises(UnsupportedExpressionError, match=bad.key[:12]):
        render_c([bad])


def test_irrational_constant_factors_are_one_literal():
    # gelu's derivative: sqrt(2)*x*exp(-x**2/2)/(2*sqrt(pi)) multiplies by one constant,
    # rounded once from the exact value, instead of dividing by sqrt(pi) per element.
    text = show(sp.sqrt(2) * X * sp.exp(-X**2 / 2) / (2 * sp.sqrt(sp.pi)), "float64")
    assert text.startswith("0.3989422804014327*") and "sqrt" not in text and "/" not in text
    assert show(-sp.sqrt(2) * X / 2) == "-0.707106769f*x"
    assert show(sp.Rational(1, 3) * X) == "0.333333343f*x"  # rationals: as before
