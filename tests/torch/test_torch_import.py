"""PyTorch stays optional: ``import heterosymnn`` never imports it, and a missing one is a clear ImportError."""
from __future__ import annotations

import subprocess
import sys

import pytest


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_import_heterosymnn_does_not_import_torch():
    result = _run("import sys, heterosymnn, heterosymnn.jit\n"
                  "from heterosymnn import SymbolicJITCompiler\n"
                  "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))")
    assert result.returncode == 0, result.stderr


def test_missing_torch_names_the_extra():
    result = _run("import sys\nsys.modules['torch'] = None\nimport heterosymnn.torch")
    assert result.returncode != 0
    assert "heterosymnn.torch needs PyTorch: pip install 'heterosymnn[torch]'" in result.stderr


def test_import_heterosymnn_torch_registers_the_operators():
    pytest.importorskip("torch.library", reason="PyTorch is not installed: pip install 'heterosymnn[torch]'")
    result = _run("import torch, heterosymnn.torch\n"
                  "print(torch.ops.heterosymnn.activation.default._schema)")
    assert result.returncode == 0, result.stderr
    assert "heterosymnn::activation(Tensor x, Tensor constants, SymInt layer_id) -> Tensor" in result.stdout
