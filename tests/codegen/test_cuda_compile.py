"""The generated CUDA, checked without a GPU.

* NVRTC compiles the whole formula corpus (activation + loss, float32 +
  float64) for sm_75, sm_80 and sm_90 through to a cubin, with no error and no
  warning, plus the doctor's probe kernel. NVRTC needs no device; these tests
  skip (saying why) only when no NVRTC can be loaded at all.
* The same source, compiled as host C++ with g++ (a few macros stand in for
  the CUDA keywords and a loop over the grid stands in for the launch), runs
  both kernels -- the block-row one and the one-thread-per-element one --
  over mixed layers and is compared with NumPy like the C kernels are: this
  checks the semantics, the dispatch on structure ids, the per-node constants
  and the grid-stride indexing. Only device math accuracy is left to the GPU
  tests.
"""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cuda_emulation
import numpy as np
import pytest
from codegen_support import CORPUS, PARAMS, activation_inputs, check, grad_inputs, loss_inputs
from corpus import ACTIVATIONS, LOSSES
from heterosymnn import JITCompilationError, ToolchainNotFoundError, render_source
from heterosymnn.backends.cuda import PROBE_KERNEL, probe_source
from heterosymnn.codegen.cuda_source import (
    BLOCK_THREADS, NVRTC_OPTIONS, ROW_KERNEL_MIN_COLS, kernel_names, plan_launch, render_cuda_module,
)
from heterosymnn.symbolic.layer import analyze
from heterosymnn.symbolic.structure import ACTIVATION, LOSS
from heterosymnn.toolchains import nvrtc as nvrtc_module

ARCHS = ("sm_75", "sm_80", "sm_90")
DTYPES = ("float32", "float64")
CORPUS_CONFIGS = {ACTIVATION: [c for c, _, _ in ACTIVATIONS], LOSS: [c for c, _, _ in LOSSES]}


def _layer_module(mode: str, dtype: str):
    return render_cuda_module(analyze(CORPUS_CONFIGS[mode], mode).structures, dtype)


# -- NVRTC -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compiled(nvrtc):
    """Every (source, dtype, arch) compiled to a cubin once, in parallel: name -> (cubin, log)."""
    jobs = {}
    for dtype in DTYPES:
        for arch in ARCHS:
            for mode in (ACTIVATION, LOSS):
                jobs[(mode, dtype, arch)] = _layer_module(mode, dtype).source
            jobs[("codegen-corpus", dtype, arch)] = render_cuda_module(CORPUS, dtype).source
        jobs[("probe", dtype, "sm_75")] = probe_source()

    def one(item):
        (_, _, arch), source = item
        try:
            return nvrtc.compile(source, arch, NVRTC_OPTIONS, cubin=True)
        except JITCompilationError as exc:
            return None, str(exc)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(jobs, pool.map(one, jobs.items())))


def _assert_clean(result) -> None:
    cubin, log = result
    assert cubin is not None, log
    assert cubin[:4] == b"\x7fELF", "NVRTC returned something that is not a cubin"
    assert log == "", f"NVRTC said something (warnings count as failures):\n{log}"


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", [ACTIVATION, LOSS])
def test_formula_corpus_compiles_cleanly(compiled, mode, dtype, arch):
    _assert_clean(compiled[(mode, dtype, arch)])


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_codegen_corpus_compiles_cleanly(compiled, dtype, arch):
    """Every printable node (powers, Piecewise without a True branch, Heaviside ...)."""
    _assert_clean(compiled[("codegen-corpus", dtype, arch)])


def test_probe_kernel_compiles(compiled):
    _assert_clean(compiled[("probe", "float32", "sm_75")])


@pytest.mark.parametrize("dtype", DTYPES)
def test_ptx_exports_every_kernel_by_its_c_name(nvrtc, dtype):
    ptx, log = nvrtc_module.compile_ptx(_layer_module(ACTIVATION, dtype).source, "sm_80", NVRTC_OPTIONS)
    assert log == ""
    for name in kernel_names(dtype).values():
        assert re.search(rf"\.entry {name}\(", ptx), name  # extern "C": no mangling


def test_no_contraction_into_fused_multiply_add(nvrtc):
    """--fmad=false keeps a*b + c rounded twice, like NumPy (math functions may use fma inside)."""
    source = render_cuda_module(analyze([("a*num*num + b*num + c", {"a": 1.0, "b": 2.0, "c": 3.0})], ACTIVATION).structures, "float32").source
    ptx, _ = nvrtc_module.compile_ptx(source, "sm_80", NVRTC_OPTIONS)
    assert "fma.rn" not in ptx and "mul.rn.f32" in ptx
    contracted, _ = nvrtc_module.compile_ptx(source, "sm_80")
    assert "fma.rn" in contracted  # the check above can fail


def test_nvrtc_errors_carry_the_log(nvrtc):
    with pytest.raises(JITCompilationError, match="undefined_function_xyz") as info:
        nvrtc_module.compile_ptx('extern "C" __global__ void k() { undefined_function_xyz(); }')
    assert "error" in info.value.compiler_output


def test_missing_nvrtc_says_why_and_how_to_fix(monkeypatch):
    def broken():
        raise OSError("simulated: not installed")

    for name in ("_from_cupy", "_from_cuda_bindings", "_from_library"):
        monkeypatch.setattr(nvrtc_module, name, broken)
    nvrtc_module.find_nvrtc.cache_clear()
    try:
        with pytest.raises(ToolchainNotFoundError) as info:
            nvrtc_module.find_nvrtc()
    finally:
        nvrtc_module.find_nvrtc.cache_clear()
    message = str(info.value)
    assert "nvidia-cuda-nvrtc-cu12" in message and "heterosymnn[gpu]" in message
    for provider in ("cupy", "cuda-bindings", "library"):
        assert f"{provider}: OSError: simulated" in message


# -- the source text -----------------------------------------------------------------------------
_F_LITERAL = re.compile(r"\b\d+\.\d*(?:e[-+]?\d+)?f\b")


def test_float32_and_float64_spellings():
    f32 = render_source(["sin(num)*exp(num) + 0.5", "erf(num)"], target="cuda", dtype="float32")
    f64 = render_source(["sin(num)*exp(num) + 0.5", "erf(num)"], target="cuda", dtype="float64")
    assert "sinf(" in f32 and "expf(" in f32 and "erff(" in f32 and _F_LITERAL.search(f32)
    assert "sinf(" not in f64 and "expf(" not in f64 and not _F_LITERAL.search(f64)
    assert re.search(r"\bsin\(", f64) and re.search(r"\bexp\(", f64)
    for text, tag in ((f32, "f32"), (f64, "f64")):
        for name in kernel_names("float32" if tag == "f32" else "float64").values():
            assert f'extern "C" __global__ void {name}(' in text
        assert "#include" not in text  # NVRTC compiles without headers


def test_helpers_are_device_inline_and_nan_needs_no_header():
    text = render_source(["relu", "sign(num)", "Piecewise((num, num > 0))"], target="cuda")
    assert "static __device__ __forceinline__ float hs_max_k_f32(" in text  # relu: Max(0, num)
    assert "static __device__ __forceinline__ float hs_sign_f32(" in text
    assert "((float)HS_NAN)" in text  # Piecewise without a True branch is NaN
    assert not re.search(r"\bNAN\b|\bINFINITY\b", text)


def test_one_switch_case_per_structure_in_a_stable_order():
    configs = ["relu", ("a*sin(num)", {"a": 1.0}), "tanh", ("b*sin(num)", {"b": 2.0})]
    layer = analyze(configs, ACTIVATION)
    forward = render_cuda_module(layer.structures, "float32")
    backward = render_cuda_module(list(reversed(layer.structures)), "float32")
    assert forward.source == backward.source and forward.cases == backward.cases
    assert sorted(forward.cases) == sorted(layer.plan.structure_keys)  # 3 distinct, shared sin
    assert sorted(forward.cases.values()) == [0, 1, 2]
    assert forward.source.count("case 2:") == 7  # seven kernels dispatch every structure


def test_render_source_cuda_is_the_backend_source():
    configs = ["relu", ("a*tanh(num)", {"a": 2.0})]
    for dtype in DTYPES:
        expected = render_cuda_module(analyze(configs, ACTIVATION).structures, dtype).source
        assert render_source(configs, target="cuda", dtype=dtype) == expected
    assert "hs_forward_rows_f64" in render_source(["mse"], target="cuda", mode="loss", dtype="float64")


# -- launch planning -----------------------------------------------------------------------------
def test_launch_for_many_nodes_with_batch_one_uses_full_blocks():
    launch = plan_launch(1024, 1, sm_count=132)
    assert launch.kind == "elems"
    assert launch.grid == (1024 // BLOCK_THREADS, 1, 1) and launch.block == (BLOCK_THREADS, 1, 1)


def test_launch_for_few_long_rows_uses_block_rows_that_fill_the_gpu():
    launch = plan_launch(4, 1_000_000, sm_count=132)
    assert launch.kind == "rows" and launch.grid[1] == 4
    blocks = launch.grid[0] * launch.grid[1]
    assert blocks >= 132 * 4  # every multiprocessor busy
    assert launch.grid[0] * BLOCK_THREADS <= 1_000_000  # no idle blocks


@pytest.mark.parametrize("rows, cols", [(1, 1), (3, ROW_KERNEL_MIN_COLS - 1), (7, ROW_KERNEL_MIN_COLS),
                                        (100_000, 64), (1, 10**9), (2**20, 3)])
def test_launch_grids_stay_within_cuda_limits(rows, cols):
    launch = plan_launch(rows, cols, sm_count=80)
    gx, gy, gz = launch.grid
    assert 1 <= gx < 2**31 and 1 <= gy <= 65535 and gz == 1
    assert launch.kind == ("rows" if cols >= ROW_KERNEL_MIN_COLS else "elems")
    if launch.kind == "rows":
        assert gy == min(rows, 65535)


# -- host emulation of the kernels ---------------------------------------------------------------
@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    """The codegen corpus' CUDA kernels built as host C++: dtype -> (CudaModule, ctypes library)."""
    return cuda_emulation.build_modules(CORPUS, tmp_path_factory.mktemp("cuda_emulation"))


def _emulate(emulated, dtype, role, structures, a, b, g, grid, block):
    module, lib = emulated[dtype]
    rows, cols = a.shape
    ids = np.array([module.cases[s.key] for s in structures], dtype=np.int32)
    params = np.tile(PARAMS, (rows, 1)).astype(np.float64)
    out = np.full_like(a, 12345.0)
    cuda_emulation.launch(lib, module.kernels[role], grid, block,
                          (ids, params, params.shape[1], rows, cols, a, b, g, out))
    return out


def _layout(mode, dtype):
    structures = [s for s in CORPUS if s.mode == mode]
    if mode == ACTIVATION:
        x = activation_inputs(dtype)
        a, b, g = x, None, grad_inputs(x.size, dtype)
    else:
        a, b = loss_inputs(dtype)
        g = None
    tile = (lambda v: None if v is None else np.ascontiguousarray(np.tile(v, (len(structures), 1))))
    return structures, (a, b, g), (tile(a), tile(b), tile(g))


@pytest.mark.parametrize("grid_kind", ["planned", "odd"])
@pytest.mark.parametrize("kind", ["rows", "elems"])
@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("mode", [ACTIVATION, LOSS])
@pytest.mark.parametrize("dtype", DTYPES)
def test_emulated_kernels_match_numpy(emulated, dtype, mode, direction, kind, grid_kind):
    """Each row of a mixed layer runs its own structure with its own constants."""
    structures, (a, b, g), (A, B, G) = _layout(mode, dtype)
    if grid_kind == "planned":
        launch = plan_launch(*A.shape, sm_count=2)
        grid, block = (launch.grid, launch.block) if launch.kind == kind else ((3, 5), (32, 1, 1))
    else:  # fewer blocks and rows than work: every grid-stride loop must wrap
        grid, block = ((2, 3), (32, 1, 1)) if kind == "rows" else ((3, 1), (64, 1, 1))
    out = _emulate(emulated, dtype, f"{direction}_{kind}", structures, A, B,
                   G if direction == "backward" else None, grid, block)
    which = "fwd" if direction == "forward" else "bwd"
    for row, structure in enumerate(structures):
        check(out[row], structure, which, dtype, a, b, g if which == "bwd" else None,
              what=f"{kind} kernel row {row}")


@pytest.mark.parametrize("kind", ["rows", "elems"])
def test_emulated_kernels_cover_batch_one_and_skip_nothing(emulated, kind):
    """(n, 1): every node written exactly once, whichever kernel runs it."""
    structures = [s for s in CORPUS if s.mode == ACTIVATION]
    a = np.linspace(-2, 2, len(structures)).reshape(-1, 1)
    out = _emulate(emulated, "float64", f"forward_{kind}", structures, a, None, None, (2, 4), (32, 1, 1))
    for row, structure in enumerate(structures):
        check(out[row], structure, "fwd", "float64", a[row])


def test_probe_source_is_the_doctors_kernel():
    assert f'extern "C" __global__ void {PROBE_KERNEL}(' in probe_source()


def test_generated_cuda_has_no_machine_specific_text():
    text = render_cuda_module(CORPUS, "float32").source
    assert str(Path.home()) not in text
