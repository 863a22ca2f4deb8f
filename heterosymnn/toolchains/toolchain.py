"""The value every detector hands on: which compiler, with which flags.

A :class:`Toolchain` is everything a build needs to know about the C compiler
and nothing else; its :meth:`Toolchain.identity` is what the cache key hashes,
so two toolchains that could produce different machine code must never share
an identity.
"""
from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Sequence, Tuple

# Environment entries that change what a build produces. They go into the
# identity; the rest of build_env (for MSVC the whole captured environment,
# including per-user entries such as TEMP) would only split the shared cache.
_IDENTITY_ENV_KEYS = frozenset({
    "CC", "LDSHARED", "CFLAGS", "CPPFLAGS", "LDFLAGS", "ARCHFLAGS",
    "VCTOOLSVERSION", "WINDOWSSDKVERSION", "UCRTVERSION",
})


@dataclass(frozen=True)
class Toolchain:
    """A usable C compiler and the flags heterosymnn builds with.

    Attributes
    ----------
    name : str
        Compiler family: ``"gcc"``, ``"clang"``, ``"msvc"`` or ``"zig"``.
    path : str
        The compiler as an absolute executable path. For GCC/Clang given as a
        command with arguments (``HETEROSYMNN_CC="ccache gcc"``) it is that
        command line, with its first word resolved. For Zig it is the ``zig``
        executable; the C compiler is ``<path> cc`` (see :meth:`cc_command`).
    version : str
        The probed compiler version, e.g. ``"12.2.0"``.
    compile_args : tuple of str
        ``extra_compile_args`` for ``FFI.set_source``.
    link_args : tuple of str
        ``extra_link_args`` for ``FFI.set_source``.
    build_env : tuple of (str, str)
        Variables a build child process must set (over its inherited
        environment, see :meth:`environ`) so that setuptools uses this
        compiler.
    openmp : bool
        Whether the flags enable OpenMP (verified by running a probe).
    isa : str
        Instruction-set level the code targets, e.g. ``"x86-64-v3"``.
    compiler_type : str
        setuptools compiler class the build must use: ``"unix"``, ``"msvc"``,
        or ``"mingw32"`` for GCC-like compilers on Windows (where setuptools
        would otherwise pick MSVC; a build sets it with ``[build_ext]
        compiler = mingw32`` in a ``setup.cfg`` of its build directory).
    """

    name: str
    path: str
    version: str
    compile_args: Tuple[str, ...]
    link_args: Tuple[str, ...]
    build_env: Tuple[Tuple[str, str], ...]
    openmp: bool
    isa: str
    compiler_type: str = "unix"

    def cc_command(self) -> list[str]:
        """The argument vector that invokes the C compiler.

        Returns
        -------
        list of str
            E.g. ``["/usr/bin/gcc"]`` or ``["/.../zig", "cc"]``.
        """
        if self.name == "zig":
            return split_command(self.path) + ["cc"]
        return split_command(self.path)

    def environ(self, base: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
        """The complete environment for a build child process.

        Parameters
        ----------
        base : mapping, optional
            Environment to start from; defaults to a copy of ``os.environ``
            (which is never modified).

        Returns
        -------
        dict
            ``base`` updated with :attr:`build_env`.
        """
        env = dict(os.environ if base is None else base)
        env.update(self.build_env)
        return env

    def identity(self) -> str:
        """Stable text naming everything that shapes the built code.

        Returns
        -------
        str
            Canonical JSON of the family, the compiler path (as given and with
            symbolic links resolved), version, every flag, the OpenMP mode, the
            ISA level and the build-relevant environment entries.
        """
        argv = self.cc_command()
        fields = {
            "name": self.name,
            "path": self.path,
            "real_path": os.path.realpath(argv[0]) if argv else "",
            "version": self.version,
            "compile_args": list(self.compile_args),
            "link_args": list(self.link_args),
            "openmp": self.openmp,
            "isa": self.isa,
            "compiler_type": self.compiler_type,
            "env": sorted([k, v] for k, v in self.build_env if k.upper() in _IDENTITY_ENV_KEYS),
        }
        return json.dumps(fields, sort_keys=True, separators=(",", ":"))

    def describe(self) -> str:
        """One line for logs and the doctor."""
        omp = "OpenMP" if self.openmp else "serial (no OpenMP)"
        return f"{self.name} {self.version} at {self.path} [{self.isa}, {omp}]"


def split_command(command: str) -> list[str]:
    """Split a compiler command line into words.

    An existing file is one word even if it contains spaces (Windows paths
    under ``Program Files``); otherwise POSIX shell rules apply, except on
    Windows where backslashes are path separators, not escapes.
    """
    if os.path.isfile(command):
        return [command]
    if sys.platform == "win32":
        return [w[1:-1] if len(w) > 1 and w[0] == w[-1] == '"' else w
                for w in shlex.split(command, posix=False)]
    return shlex.split(command)


def join_command(argv: Sequence[str]) -> str:
    """Join words into a command line that setuptools splits back correctly.

    setuptools splits ``CC``/``LDSHARED`` with its own ``split_quoted``, which
    treats a backslash as an escape; Windows paths therefore get forward
    slashes (which Windows accepts) and double quotes around spaces.
    """
    if sys.platform == "win32":
        words = [a.replace("\\", "/") for a in argv]
        return " ".join(f'"{w}"' if (" " in w or not w) else w for w in words)
    return " ".join(shlex.quote(a) for a in argv)


def unix_build_env(cc: Sequence[str], machine: str, platform_name: Optional[str] = None
                   ) -> Tuple[Tuple[str, str], ...]:
    """Variables that make setuptools' unix compiler build with ``cc``.

    ``CC`` and ``LDSHARED`` select the compiler and the shared-object link
    command. ``CFLAGS``/``CPPFLAGS``/``LDFLAGS`` are set empty so that a user's
    unrelated settings cannot change an artifact without changing its cache
    key (every flag that matters is in compile_args/link_args). On macOS,
    ``ARCHFLAGS`` keeps universal2 Pythons from building for both
    architectures with flags meant for one.
    """
    platform_name = platform_name or sys.platform
    if platform_name == "darwin":
        link = [*cc, "-bundle", "-undefined", "dynamic_lookup"]
    else:
        link = [*cc, "-shared"]
    env = {"CC": join_command(cc), "LDSHARED": join_command(link),
           "CFLAGS": "", "CPPFLAGS": "", "LDFLAGS": ""}
    if platform_name == "darwin":
        env["ARCHFLAGS"] = f"-arch {machine}"
    return tuple(sorted(env.items()))
