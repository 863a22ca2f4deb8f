"""examples/sklearn_friedman.py runs as it is on a small budget and prints the comparison."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch.library", reason="PyTorch is not installed: pip install 'heterosymnn[sklearn]'")
pytest.importorskip("sklearn.base", reason="scikit-learn is not installed: pip install 'heterosymnn[sklearn]'")


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sklearn_friedman.py"


def test_example_runs_quick_and_prints_the_table(fresh_cache_dir):
    env = dict(os.environ, HETEROSYMNN_CACHE_DIR=str(fresh_cache_dir), OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, str(EXAMPLE), "--quick"], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "MLPRegressor() defaults" in result.stdout and "HeteroMLPRegressor() defaults" in result.stdout
    assert "learned constants" in result.stdout
    scores = dict(re.findall(r"(r2_\d)=(\S+)", result.stdout))
    assert len(scores) == 6, result.stdout
    assert float(scores["r2_5"]) > 0.3, result.stdout  # 20 epochs on 300 samples: a start, not a fit
