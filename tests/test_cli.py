"""``python -m heterosymnn`` and its subcommands: help, show, demo."""
from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from heterosymnn import __main__ as cli
from heterosymnn import show

REPO = Path(__file__).resolve().parents[1]


def run_cli(cache_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HETEROSYMNN_")}
    env.update(PYTHONPATH=str(REPO), HETEROSYMNN_CACHE_DIR=str(cache_dir))
    return subprocess.run([sys.executable, "-m", "heterosymnn", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def run_show(capsys, *argv: str):
    out = io.StringIO()
    status = show.main(list(argv), out=out)
    return status, out.getvalue(), capsys.readouterr().err


def test_help_lists_every_command(tmp_path):
    proc = run_cli(tmp_path, "--help")
    assert proc.returncode == 0
    for name in ("doctor", "show", "demo", "cache"):
        assert f"  {name} " in proc.stdout


def test_unknown_command_exits_2(capsys):
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_show_python_target(capsys):
    status, out, err = run_show(capsys, "relu", "a*tanh(num)", "leaky_relu", "--const", "a=2",
                                   "--target", "python")
    assert status == 0, err
    assert "formula 1: a*tanh(num)" in out
    assert "expression : a*tanh(num)" in out and "derivative : a*(1 - tanh(num)**2)" in out
    assert "slot p0    : alpha = 0.01 (default of the named formula)" in out
    assert "slot p0    : a = 2.0 (given)" in out
    assert "numpy.tanh" in out and "structure  : 2 (key " in out


def test_show_c_target_with_const(capsys):
    status, out, err = run_show(capsys, "a*sin(w*num)", "relu", "--const", "a=2", "--const", "w=30",
                                "--target", "c", "--dtype", "float64")
    assert status == 0, err
    assert "slot p0    : a = 2.0 (given)" in out or "slot p1    : a = 2.0 (given)" in out
    assert "w = 30.0 (given)" in out
    assert "#include <math.h>" in out and "double" in out
    assert "not used" not in err  # relu not using a or w is not worth a warning


def test_show_unused_const_is_noted(capsys):
    status, _, err = run_show(capsys, "relu", "--const", "b=1", "--target", "python")
    assert status == 0 and "b not used" in err


def test_show_cuda_target_or_clean_message(capsys):
    status, out, err = run_show(capsys, "sin", "--target", "cuda")
    assert "formula 0: sin" in out
    if status == 0:
        assert "generated cuda source" in out and "sin" in out.split("generated cuda source")[1]
    else:
        assert status == 1 and "cuda target is not available" in err and "Traceback" not in err


def test_show_loss_mode(capsys):
    status, out, err = run_show(capsys, "mse", "--mode", "loss", "--target", "python")
    assert status == 0, err
    assert "(y_pred - y_true)**2" in out and "derivative : 2*(y_pred - y_true)" in out


def test_show_bad_formula_exits_2(tmp_path):
    proc = run_cli(tmp_path, "show", "sin(num", "--target", "python")
    assert proc.returncode == 2
    assert "never closed" in proc.stderr and "Traceback" not in proc.stderr


def test_show_bad_const_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        show.main(["relu", "--const", "a=b"])
    assert exc.value.code == 2 and "NAME=VALUE" in capsys.readouterr().err


def test_demo_end_to_end(tmp_path):
    proc = run_cli(tmp_path, "demo", "--nodes", "16", "--batch", "8", "--repeats", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines()
            if line.split() and line.split()[0] in ("CPU_PYTHON", "CPU_JIT", "GPU_CUDA")}
    assert rows["CPU_PYTHON"][-1] == "reference"
    assert rows["CPU_JIT"][-1] == "yes"
    assert "nothing rebuilt" in proc.stdout
