"""Fixtures of the codegen tests; the helpers live in codegen_support."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Dict

import pytest

from codegen_support import CORPUS, DTYPES, Built, build_cffi, fast_flags, have_gcc
from heterosymnn import ToolchainNotFoundError
from heterosymnn.codegen import render_c_module, render_runtime
from heterosymnn.toolchains import nvrtc as nvrtc_module


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> Dict[str, Built]:
    """The whole corpus and the runtime, built once per dtype (in parallel)."""
    if not have_gcc():
        pytest.skip("no gcc on PATH")
    root = tmp_path_factory.mktemp("codegen_build")
    flags = fast_flags()

    def one(dtype: str):
        cm = render_c_module(CORPUS, dtype)
        rs = render_runtime(dtype)
        tag = dtype[-2:]
        k = build_cffi(root / f"k{tag}", f"_hs_test_kernels_{tag}", cm.cdef, cm.source, **flags)
        r = build_cffi(root / f"r{tag}", f"_hs_test_runtime_{tag}", rs.cdef, rs.source, **flags)
        return Built(dtype, k, r, cm, rs)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip(DTYPES, pool.map(one, DTYPES)))
    return results


@pytest.fixture(scope="session")
def nvrtc():
    """The loaded NVRTC library (compiles CUDA without a GPU); skips where none can be loaded."""
    try:
        return nvrtc_module.find_nvrtc()
    except ToolchainNotFoundError as exc:
        pytest.skip(f"no NVRTC can be loaded here: {exc}")
