"""Shared helpers: fresh detector caches, and building a cffi module the way
the library does (in a child process, with the toolchain's environment)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from heterosymnn.toolchains import clear_caches

CHILD = textwrap.dedent(
    """
    import importlib.util, json, sys
    import cffi

    spec = json.loads(sys.argv[1])
    ffi = cffi.FFI()
    ffi.cdef(spec["cdef"])
    ffi.set_source(spec["module"], spec["source"],
                   extra_compile_args=spec["compile_args"], extra_link_args=spec["link_args"])
    path = ffi.compile(tmpdir=spec["tmpdir"], verbose=True)
    mspec = importlib.util.spec_from_file_location(spec["module"], path)
    mod = importlib.util.module_from_spec(mspec)
    mspec.loader.exec_module(mod)
    results = {name: getattr(mod.lib, name)(*args) for name, args in spec["calls"].items()}
    print("RESULT " + json.dumps(results))
    """
)


@pytest.fixture
def fresh_caches():
    """Detection caches cleared before and after the test."""
    clear_caches()
    yield
    clear_caches()


@pytest.fixture
def build_and_call(tmp_path):
    """Build C source with a toolchain in a child process and call functions.

    Returns ``run(toolchain, cdef, source, calls, env_drop=())`` giving
    ``{function: result}``.
    """

    def run(toolchain, cdef, source, calls, env_drop=()):
        build = tmp_path / "build"
        build.mkdir(exist_ok=True)
        if toolchain.compiler_type == "mingw32":
            # setuptools picks MSVC on Windows unless told otherwise.
            (build / "setup.cfg").write_text("[build_ext]\ncompiler = mingw32\n")
        script = tmp_path / "child.py"
        script.write_text(CHILD)
        spec = {"cdef": cdef, "source": source, "module": f"_hsn_probe_{toolchain.name}",
                "compile_args": list(toolchain.compile_args),
                "link_args": list(toolchain.link_args), "tmpdir": str(build), "calls": calls}
        env = toolchain.environ()
        for name in env_drop:
            env.pop(name, None)
        proc = subprocess.run([sys.executable, str(script), json.dumps(spec)], cwd=str(build),
                              env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"build failed:\n{proc.stdout}\n{proc.stderr}"
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
        return json.loads(line[len("RESULT "):]), proc.stdout

    return run
