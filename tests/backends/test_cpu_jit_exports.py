"""The export tables of CPU_JIT's modules (codegen/c_exports.py) as a process loads several of them.

Every module names its tables the same; they must stay private to it (``static``), or a process
loading extensions with ``RTLD_GLOBAL`` (some MPI and plotting stacks do) binds one module's
accessor to another module's tables and reads the wrong functions.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from heterosymnn.codegen.c_exports import export_tables

CHILD = textwrap.dedent("""
    import json, os, sys
    sys.setdlopenflags(os.RTLD_GLOBAL | os.RTLD_NOW)
    import numpy as np
    from heterosymnn import SymbolicJITCompiler

    z = np.linspace(-2, 2, 12, dtype=np.float64).reshape(3, 4)
    report = {}
    # Three modules in one process: the first layer's rows, the second layer's new rows, and the
    # second layer's constants-gradient module.
    for name, configs in (("one", ["tanh", "sin", "relu"]),
                          ("two", ["tanh", ("a*atan(num)", {"a": 1.5}), "softplus"])):
        jit = SymbolicJITCompiler(configs, "CPU_JIT", dtype="float64", strict=True)
        ref = SymbolicJITCompiler(configs, "CPU_PYTHON", dtype="float64")
        grad = np.ones_like(z)
        cg_jit, cg_ref = np.zeros(len(jit.constant_names)), np.zeros(len(ref.constant_names))
        report[name] = {
            "forward": float(np.max(np.abs(jit.forward_kernel(z) - ref.forward_kernel(z)))),
            "backward": float(np.max(np.abs(jit.backward_kernel(z, grad, constants_grad=cg_jit)
                                            - ref.backward_kernel(z, grad, constants_grad=cg_ref)))),
            "constants_grad": float(np.max(np.abs(cg_jit - cg_ref), initial=0.0)),
        }
    print(json.dumps(report))
""")


@pytest.mark.skipif(not hasattr(os, "RTLD_GLOBAL") or sys.platform == "win32", reason="ELF symbol binding")
def test_modules_loaded_with_rtld_global_read_their_own_tables(tmp_path):
    env = dict(os.environ, HETEROSYMNN_CACHE_DIR=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.splitlines()[-1])
    for layer in ("one", "two"):
        assert report[layer]["forward"] < 1e-12 and report[layer]["backward"] < 1e-12, report
        assert report[layer]["constants_grad"] < 1e-9, report


def test_tables_are_private_to_their_module():
    source, cdef = export_tables(["hs_a_fwd", "hs_a_bwd"])
    assert "static HS_EXPORT_TABLE void (*const hs_row_addresses[2])(void) = {" in source
    assert "static HS_EXPORT_TABLE const char *const hs_row_names[2] = {" in source
    assert '"hs_a_fwd",\n    "hs_a_bwd",' in source and "(void (*)(void))&hs_a_bwd," in source
    assert export_tables([]) == ("", "")
