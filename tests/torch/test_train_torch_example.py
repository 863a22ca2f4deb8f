"""examples/train_torch.py runs as it is and the heterogeneous MLP beats the fixed activation."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch.library", reason="PyTorch is not installed: pip install 'heterosymnn[torch]'")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "train_torch.py"


def test_example_trains_and_beats_the_fixed_activation(fresh_cache_dir):
    # One thread: two OpenMP runtimes (PyTorch's and the kernels') on a small shared machine
    # otherwise spin against each other.
    env = dict(os.environ, HETEROSYMNN_CACHE_DIR=str(fresh_cache_dir), HETEROSYMNN_EXAMPLE_STEPS="300",
               OMP_NUM_THREADS="1", HETEROSYMNN_NUM_THREADS="1")
    result = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    found = re.search(r"RESULT hetero=(\S+) baseline=(\S+)", result.stdout)
    assert found, result.stdout
    hetero, baseline = map(float, found.groups())
    assert hetero < baseline, result.stdout
    assert "learned constants" in result.stdout and "300 steps" in result.stdout
