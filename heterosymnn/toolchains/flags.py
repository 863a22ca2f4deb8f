"""Every flag the C kernels are built with, in one place.

The detectors compose a :class:`~heterosymnn.toolchains.Toolchain`'s flags from
these, the CPU backend adds the macros that go with them (:func:`build_compile_args`),
and the tests compile the generated C with exactly the same flags.

GCC, Clang and Zig (found with GCC 12 and zig 0.13's Clang, checked by the tests):

* ``-fno-math-errno``: otherwise every math call may write ``errno`` and no loop
  that calls one is vectorised (libmvec);
* ``-fno-trapping-math``: otherwise GCC will not if-convert a Piecewise whose
  branches compute (``x > 0 ? 1/x : 0``: "control flow in loop"). It only drops
  the ordering of floating-point exception flags, which nothing reads; results,
  NaN and inf included, are unchanged;
* ``-ffp-contract=off``: ``a*b + c`` is never fused into an fma, which would
  change NaN/inf results (the generated source forces it with a pragma too);
* never ``-ffast-math`` or ``-ffinite-math-only``: they fold ``x != x``;
* ``-fopenmp``, or where the OpenMP runtime is missing ``-fopenmp-simd``, which
  honours ``omp simd`` but predefines nothing, hence ``-DHS_OPENMP_SIMD``;
* where glibc's libmvec exists, ``-lmvec`` and ``-DHS_USE_LIBMVEC`` so vectorised
  loops call ``_ZGVdN8v_sinf`` & co. (see :mod:`heterosymnn.codegen.c_prelude`).
"""
from __future__ import annotations

from typing import Iterable, Tuple

Flags = Tuple[str, ...]

#: Macro that turns on the SIMD declarations of the vector math library.
LIBMVEC_MACRO = "HS_USE_LIBMVEC"
#: Macro that tells the source ``omp simd`` is understood without ``_OPENMP``.
OPENMP_SIMD_MACRO = "HS_OPENMP_SIMD"

OPTIMIZE: Flags = ("-O3",)
FLOAT_SEMANTICS: Flags = ("-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off")
#: Cancels the ``-g`` in Python's own CFLAGS: debug info nobody reads costs 15-20% of a build.
NO_DEBUG_INFO: Flags = ("-g0",)
OPENMP: Flags = ("-fopenmp",)  # compile and link
OPENMP_SIMD: Flags = ("-fopenmp-simd",)
LIBMVEC: Flags = ("-lmvec",)
#: Zig builds its runtime libraries for the link: optimised, and for the target CPU.
ZIG_LINK: Flags = ("-O2",)
MSVC: Flags = ("/O2", "/fp:precise", "/openmp")

# Flags that predefine nothing the source could test, and the macro that tells it.
_MACROS = ((OPENMP_SIMD[0], OPENMP_SIMD_MACRO), (LIBMVEC[0], LIBMVEC_MACRO))


def base_args(isa_args: Iterable[str] = ()) -> Flags:
    """Optimisation, CPU and float-semantics flags of GCC, Clang and Zig."""
    return OPTIMIZE + tuple(isa_args) + FLOAT_SEMANTICS


def unix_compile_args(isa_args: Iterable[str] = (), openmp_args: Iterable[str] = (),
                      *, simd: bool = False) -> Flags:
    """A GCC/Clang/Zig toolchain's compile flags.

    ``openmp_args`` are the OpenMP compile flags that work (empty without the
    runtime); ``simd`` adds ``-fopenmp-simd`` for a compiler without them.
    """
    return base_args(isa_args) + tuple(openmp_args) + (OPENMP_SIMD if simd else ()) + NO_DEBUG_INFO


def unix_link_args(openmp_args: Iterable[str] = (), *, libmvec: bool = False) -> Flags:
    """A GCC/Clang toolchain's link flags: OpenMP's, then libmvec where it links."""
    return tuple(openmp_args) + (LIBMVEC if libmvec else ())


def zig_link_args(isa_args: Iterable[str]) -> Flags:
    """Zig's link flags: the CPU too, or its runtime defaults to the build machine's."""
    return ZIG_LINK + tuple(isa_args)


def msvc_compile_args(isa_args: Iterable[str] = ()) -> Flags:
    """MSVC's compile flags (``/fp:precise`` keeps IEEE semantics)."""
    return MSVC + tuple(isa_args)


def build_compile_args(compile_args: Iterable[str], link_args: Iterable[str] = ()) -> Flags:
    """The compile flags a module is built with: a toolchain's, plus the macros its flags need.

    Derived at build time rather than stored in the toolchain, so that a toolchain
    remembered by an older version (or written by hand) gets them too.
    """
    args = tuple(compile_args)
    given = set(args) | set(link_args)
    return args + tuple(f"-D{macro}" for flag, macro in _MACROS
                        if flag in given and f"-D{macro}" not in args)
