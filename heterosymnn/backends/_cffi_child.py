"""Build one cffi extension module; run as a separate process by ``cffi_build``.

cffi's ``compile()`` changes the working directory and distutils reads the
environment, so builds never run inside the user's process. This script is
executed by path and imports nothing from heterosymnn, so it works however
the package was installed.
"""
import json
import sys


def main(spec_path: str) -> int:
    with open(spec_path, encoding="utf-8") as handle:
        spec = json.load(handle)
    from cffi import FFI

    ffi = FFI()
    ffi.cdef(spec["cdef"])
    ffi.set_source(
        spec["module"],
        spec["source"],
        extra_compile_args=spec["compile_args"],
        extra_link_args=spec["link_args"],
        libraries=spec["libraries"],
    )
    artifact = ffi.compile(tmpdir=spec["workdir"], verbose=False)
    sys.stdout.write("\nHETEROSYMNN-ARTIFACT " + json.dumps(artifact) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
