"""scikit-learn and PyTorch stay optional: ``import heterosymnn`` imports neither; a missing one names the extra."""
from __future__ import annotations

import subprocess
import sys

import pytest


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_import_heterosymnn_does_not_import_sklearn_or_torch():
    result = _run("import sys, heterosymnn\n"
                  "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'torch'))\n"
                  "assert not bad, bad")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("missing", ["sklearn", "torch"])
def test_missing_dependency_names_the_extra(missing):
    result = _run(f"import sys\nsys.modules[{missing!r}] = None\nimport heterosymnn.sklearn")
    assert result.returncode != 0
    assert "heterosymnn.sklearn needs scikit-learn and PyTorch: pip install 'heterosymnn[sklearn]'" in result.stderr
