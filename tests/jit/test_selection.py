"""Every failure of a compiled backend falls back (or raises under ``strict``), whatever its type.

The failures are injected where real ones would come from (code generation, the
build, the NumPy backend); the fallback itself runs for real: CPU_PYTHON answers.
"""
from __future__ import annotations

import errno

import numpy as np
import pytest

from heterosymnn import (BackendUnavailableError, FormulaParsingError, InternalError, PerformanceWarning,
                         SymbolicJITCompiler)
from heterosymnn.backends import cffi_build, python
from heterosymnn.codegen import c_source

# Texts no other test uses: a cached plan or module would skip the injected failure.
CONFIGS = ["0.3127*num + sin(num)", ("a*tanh(num) - 0.2213", {"a": 1.5})]
Z = np.linspace(-2, 2, 16, dtype=np.float32).reshape(2, 8)


def _reference() -> np.ndarray:
    return SymbolicJITCompiler(CONFIGS, "CPU_PYTHON").forward_kernel(Z)


def _codegen_bug(*args, **kwargs):
    raise ValueError("printer bug: no C for this node")


def test_a_bug_in_code_generation_falls_back_and_says_it_is_a_bug(monkeypatch):
    monkeypatch.setattr(c_source, "render_c_module", _codegen_bug)
    with pytest.warns(PerformanceWarning) as caught:
        comp = SymbolicJITCompiler(CONFIGS, "CPU_JIT")
    assert comp.calculation_method == "CPU_PYTHON"
    message = str(caught[0].message)
    assert "CPU_JIT is not available, falling back to CPU_PYTHON" in message
    assert "internal error in heterosymnn while building the CPU_JIT backend" in message
    assert "ValueError: printer bug" in message and "This is a bug in heterosymnn" in message
    np.testing.assert_array_equal(comp.forward_kernel(Z), _reference())


def test_strict_raises_with_the_original_error_chained(monkeypatch):
    monkeypatch.setattr(c_source, "render_c_module", _codegen_bug)
    with pytest.raises(BackendUnavailableError, match="CPU_JIT could not be used .strict mode.") as info:
        SymbolicJITCompiler(CONFIGS, "CPU_JIT", strict=True)
    assert isinstance(info.value.__cause__, InternalError)
    assert isinstance(info.value.__cause__.__cause__, ValueError)


def test_an_operating_system_error_falls_back_as_an_unusable_backend(monkeypatch):
    def no_disk(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(cffi_build, "build_extension", no_disk)
    with pytest.warns(PerformanceWarning, match=r"OSError: \[Errno 5\] Input/output error") as caught:
        comp = SymbolicJITCompiler(CONFIGS, "CPU_JIT")
    assert "internal error" not in str(caught[0].message)
    assert comp.calculation_method == "CPU_PYTHON"
    np.testing.assert_array_equal(comp.forward_kernel(Z), _reference())


def test_a_bug_in_the_last_backend_is_an_internal_error(monkeypatch):
    def broken(**kwargs):
        raise TypeError("unexpected keyword")

    monkeypatch.setattr(python, "build", broken)
    with pytest.raises(InternalError, match="building the CPU_PYTHON backend: TypeError: unexpected keyword") as info:
        SymbolicJITCompiler(CONFIGS, "CPU_PYTHON")
    assert isinstance(info.value.__cause__, TypeError)


def test_a_formula_error_is_raised_at_once_not_fallen_back_from(monkeypatch):
    def formula_problem(*args, **kwargs):
        raise FormulaParsingError("node 0: unknown function 'sine'")

    monkeypatch.setattr(c_source, "render_c_module", formula_problem)
    with pytest.raises(FormulaParsingError, match="unknown function"):
        SymbolicJITCompiler(CONFIGS, "CPU_JIT")
