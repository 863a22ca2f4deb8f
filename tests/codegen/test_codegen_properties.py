"""Random layers over the whole formula language compile cleanly: the C with
``gcc -std=c99 -Wall -Wextra -Werror`` (with and without OpenMP and the vector-math
declarations), the CUDA with NVRTC, with an empty log. One compile per target per
example, each holding a whole random layer in both dtypes."""
from __future__ import annotations

import subprocess
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import formula_strategies as fs
from codegen_support import have_gcc, production_flags
from fuzzing import examples
from heterosymnn import CompilationWarning, FormulaParsingError, JITCompilationError
from heterosymnn.codegen import render_c_module
from heterosymnn.codegen.cuda_source import NVRTC_OPTIONS, render_cuda_module
from heterosymnn.symbolic.layer import UNFORESEEN_FAILURE, analyze

STRICT = ["-std=c99", "-Wall", "-Wextra", "-Werror"]


def structures_of(layer: fs.Layer):
    """The structures of the nodes the parser accepts (others are legitimately rejected)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompilationWarning)
        structures = {}
        for config in layer.configs:
            try:
                for structure in analyze([config], layer.mode).structures:
                    structures[structure.key] = structure
            except FormulaParsingError as error:
                assert UNFORESEEN_FAILURE not in str(error), str(error)
                continue
    return list(structures.values())


layers = st.sampled_from(["activation", "loss"]).flatmap(lambda mode: fs.layers(mode, min_nodes=3, max_nodes=10))


@pytest.mark.skipif(not have_gcc(), reason="no gcc on PATH")
@settings(max_examples=examples(25))
@given(layer=layers, vector=st.booleans())
def test_random_layers_compile_with_gcc_without_warnings(layer, vector, tmp_path):
    structures = structures_of(layer)
    if not structures:
        return
    for dtype in ("float32", "float64"):
        source = tmp_path / f"kernels_{dtype}.c"
        source.write_text(render_c_module(structures, dtype).source)
        # Exactly the production flags: with OpenMP (and libmvec where there is one), or as
        # on a compiler without the OpenMP runtime, pedantic.
        compile_args = production_flags("openmp" if vector else "simd")[0] + ([] if vector else ["-pedantic"])
        command = ["gcc", *STRICT, *compile_args, "-c", str(source), "-o", str(tmp_path / "kernels.o")]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and not proc.stderr.strip(), f"{' '.join(command)}\n{proc.stderr}"


@settings(max_examples=examples(25))
@given(layer=layers, arch=st.sampled_from(["sm_75", "sm_80", "sm_90"]))
def test_random_layers_compile_with_nvrtc_without_warnings(nvrtc, layer, arch):
    structures = structures_of(layer)
    if not structures:
        return
    for dtype in ("float32", "float64"):
        try:
            _, log = nvrtc.compile(render_cuda_module(structures, dtype).source, arch, NVRTC_OPTIONS, cubin=False)
        except JITCompilationError as exc:
            pytest.fail(f"NVRTC rejected the generated CUDA ({dtype}, {arch}):\n{exc}")
        assert log == "", f"NVRTC said something ({dtype}, {arch}):\n{log}"
