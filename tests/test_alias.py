"""The original HeteroSymNN import path serves heterosymnn's compiler, used the seed's way."""
from __future__ import annotations

import numpy as np

import heterosymnn


def test_alias_is_the_same_class():
    from HeteroSymNN.JIT.compiler import SymbolicJITCompiler

    import HeteroSymNN
    import HeteroSymNN.JIT

    assert SymbolicJITCompiler is heterosymnn.SymbolicJITCompiler
    assert HeteroSymNN.JIT.SymbolicJITCompiler is heterosymnn.SymbolicJITCompiler
    assert HeteroSymNN.SymbolicJITCompiler is heterosymnn.SymbolicJITCompiler
    assert HeteroSymNN.FormulaParsingError is heterosymnn.FormulaParsingError


def test_seed_style_usage():
    from HeteroSymNN.JIT.compiler import SymbolicJITCompiler

    configs = [("a*sin(num)", {"a": 2.0}), ("relu", {}), ("tanh(num)", {})]
    comp = SymbolicJITCompiler(configs, "CPU_PYTHON", 0, "activation")  # the seed's positional call
    assert comp.calculation_method == "CPU_PYTHON"
    assert comp.device_id == 0
    z = np.linspace(-2, 2, 3 * 16, dtype=np.float32).reshape(3, 16)
    out = comp.forward_kernel(z)
    expected = np.stack([2 * np.sin(z[0]), np.maximum(z[1], 0), np.tanh(z[2])])
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    grad = comp.backward_kernel(z, np.ones_like(z))
    expected = np.stack([2 * np.cos(z[0]), (z[1] > 0).astype(np.float32), 1 - np.tanh(z[2]) ** 2])
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-6)

    loss = SymbolicJITCompiler(["mse"], "CPU_PYTHON", 0, "loss")
    p, t = np.array([1.0, 2.0], np.float32), np.array([0.0, 0.0], np.float32)
    np.testing.assert_allclose(loss.forward_kernel(p, t), [1.0, 4.0])
    np.testing.assert_allclose(loss.backward_kernel(p, t), [2.0, 4.0])
