"""Fixed C text shared by every generated kernel file: headers, portability
macros, SIMD declarations of the vector math library, semantic helpers.

Why the libmvec declarations exist
----------------------------------
glibc's ``math.h`` marks ``sinf``, ``expf``, ... as having SIMD variants
(``_ZGVdN8v_sinf`` for AVX2, ...) only under ``-ffast-math``, which we never
use because it breaks NaN/inf semantics. GCC (tested with 12) will still call
the SIMD variants from a vectorised loop when

* the function is redeclared with ``__attribute__((simd("notinbranch")))``
  (the attribute works with or without ``-fopenmp``/``-fopenmp-simd``, unlike
  ``#pragma omp declare simd`` which -Wunknown-pragmas rejects without them),
* ``-fno-math-errno`` is given (otherwise the call may write ``errno`` and the
  loop is not vectorised at all), and
* the link adds ``-lmvec`` (without it the shared object loads with an
  undefined ``_ZGV...`` symbol).

The SIMD variants handle NaN, inf and huge arguments by falling back to the
scalar routine for those lanes, so results keep libm semantics (within the
documented 4 ulp; the tests compare them with NumPy on such inputs). The build
opts in with ``-DHS_USE_LIBMVEC`` only where it links libmvec; clang ignores
the GCC ``simd`` attribute (it has ``-fveclib=libmvec`` instead), so the
declarations are GCC-only. One more trap: GCC merges builtin ``sin(u)`` and
``cos(u)`` into a ``sincos`` call that has no vector form, so a loop body with
both calls them through ``const`` aliases of the same symbols (see
:func:`render_vector_declarations`).
"""
from __future__ import annotations

import functools
from typing import Callable, Dict, Iterable, Mapping, Tuple

from heterosymnn.toolchains.flags import LIBMVEC_MACRO, OPENMP_SIMD_MACRO


@functools.lru_cache(maxsize=None)
def _vector_math() -> Dict[str, Tuple[str, int]]:
    """libm base name -> (the prelude marker its SIMD declaration gets, its argument count).

    Read from the function table on first use: the layer driver, which a warm start renders
    to find its cache key, needs the prelude text only, not the table (~1 ms to import).
    """
    from heterosymnn.symbolic.functions import LIBMVEC_235, LIBMVEC_BASE, MATH_FUNCTIONS

    # Which prelude marker declares a SIMD variant of each glibc version.
    markers = {LIBMVEC_BASE: "HS_VECTOR_MATH", LIBMVEC_235: "HS_VECTOR_MATH_235"}
    return {f.c: (markers[f.vector], f.c_args) for f in MATH_FUNCTIONS if f.vector}

COMMON_PRELUDE = f"""\
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#ifndef HS_COMMON_PRELUDE
#define HS_COMMON_PRELUDE
/* A fused multiply-add rounds once where NumPy rounds twice and turns
   inf - inf into +-inf, so contraction stays off whatever the flags say
   (GCC and Clang contract by default outside strict ISO modes). GCC's sinking
   would move a call computed before a Piecewise back into the branch that uses
   it, where the vectoriser cannot if-convert it (sin/cos through their aliases). */
#if defined(__clang__)
#  pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#  pragma GCC optimize ("fp-contract=off", "no-tree-sink")
#elif defined(_MSC_VER)
#  pragma fp_contract (off)
#endif
/* omp simd is a hint: clang reports each loop it leaves scalar (one that only
   calls a libm function it has no vector form of) as a warning. */
#if defined(__clang__)
#  pragma clang diagnostic ignored "-Wpass-failed"
#endif
/* MSVC's C compiler spells restrict and inline with underscores. */
#if defined(_MSC_VER) && !defined(__clang__)
#  define HS_RESTRICT __restrict
#  define HS_INLINE static __inline
#else
#  define HS_RESTRICT restrict
#  define HS_INLINE static inline
#endif
/* omp simd needs OpenMP 4.0; without it the pragma would be an unknown-pragma
   warning, so it only appears when the compiler will understand it. */
#if (defined(_OPENMP) && _OPENMP >= 201307) || defined({OPENMP_SIMD_MACRO})
#  define HS_SIMD_LOOP _Pragma("omp simd")
#else
#  define HS_SIMD_LOOP
#endif
#if defined({LIBMVEC_MACRO}) && defined(__GNUC__) && !defined(__clang__) \\
    && defined(__x86_64__) && defined(__GLIBC__)
#  define HS_VECTOR_MATH __attribute__((simd("notinbranch")))
#  if __GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 35)
#    define HS_VECTOR_MATH_235 HS_VECTOR_MATH
#  else
#    define HS_VECTOR_MATH_235
#  endif
#endif
#endif /* HS_COMMON_PRELUDE */
"""


def render_vector_declarations(math_used: Iterable[str], ctype: str, suffix: str,
                               aliases: Mapping[str, str] | None = None) -> str:
    """SIMD redeclarations of the libm functions the kernels call.

    Parameters
    ----------
    math_used : iterable of str
        libm names called directly (``sinf``, ``exp``, ...).
    ctype, suffix : str
        C type and libm name suffix of the dtype (``float``/``f``).
    aliases : mapping of str to str, optional
        Names the kernels call instead of a libm function (``hs_sin_f32`` ->
        ``sinf``). With the vector library they are non-builtin ``const``
        aliases of the same symbol: GCC merges builtin sin(x) and cos(x) into
        one sincos() call, which it cannot vectorise, but leaves these alone.
        Without it they are plain macros for the libm name.
    """
    aliases = dict(aliases or {})
    vector_math = _vector_math()
    lines, fallbacks = [], []
    for name in sorted(set(math_used) | set(aliases.values())):
        base = name[: len(name) - len(suffix)] if suffix and name.endswith(suffix) else name
        if base not in vector_math:
            continue  # sqrt, fabs: single instructions, nothing to declare
        marker, n_args = vector_math[base]
        params = ", ".join([ctype] * n_args)
        if name in set(math_used):
            lines.append(f"{marker} {ctype} {name}({params});")
        for alias in sorted(a for a, target in aliases.items() if target == name):
            lines.append(f'{marker} __attribute__((const)) {ctype} {alias}({params}) '
                         f'__asm__("{name}");')
            fallbacks.append(f"#define {alias} {name}")
    if not lines:
        return ""
    text = "#ifdef HS_VECTOR_MATH\n" + "\n".join(lines) + "\n"
    if fallbacks:
        text += "#else\n" + "\n".join(fallbacks) + "\n"
    return text + "#endif\n"


# Bodies use ternaries on comparisons only, so compilers if-convert them into
# compare+blend inside vectorised loops. The max/min form matters: GCC 12
# vectorises "a >= b ? a : (a < b ? b : a + b)" even when nested with loop
# invariants (clipping: min(max(c0, x), 1 - c0)), but not the shorter
# "(a >= b | a != a) ? a : b". a + b is reached only when one is NaN.
_HELPER_BODIES = {
    # np.maximum / np.minimum: NaN in either argument gives NaN.
    "max": ("{T} a, {T} b", "return (a >= b) ? a : ((a < b) ? b : a + b);"),
    "min": ("{T} a, {T} b", "return (a <= b) ? a : ((a > b) ? b : a + b);"),
    # The same when the first argument is a literal (never NaN; SymPy sorts numbers first,
    # relu is Max(0, x)): one compare and one blend, bit for bit the results above (k when
    # equal, a NaN x comes back as x, as k + x would).
    "max_k": ("{T} k, {T} x", "return (k >= x) ? k : x;"),
    "min_k": ("{T} k, {T} x", "return (k <= x) ? k : x;"),
    # np.sign: 1, -1, +0 for +-0, NaN for NaN.
    "sign": ("{T} x", "return (x > {zero}) ? {one} : ((x < {zero}) ? -{one} "
                      ": ((x == {zero}) ? {zero} : x));"),
    # np.heaviside: NaN for NaN, h0 at +-0.
    "heaviside": ("{T} x, {T} h0", "return (x > {zero}) ? {one} : ((x < {zero}) ? {zero} "
                                   ": ((x == {zero}) ? h0 : x));"),
    # The same with h0 = 0 (relu's derivative) and h0 = 1: two compares, not three.
    "heaviside0": ("{T} x", "return (x > {zero}) ? {one} : ((x <= {zero}) ? {zero} : x);"),
    "heaviside1": ("{T} x", "return (x >= {zero}) ? {one} : ((x < {zero}) ? {zero} : x);"),
}


def render_helpers(kinds: Iterable[str], *, ctype: str, qualifier: str,
                   name: Callable[[str], str], literal: Callable[[float], str]) -> str:
    """Definitions of the helpers ``kinds`` for one C type.

    ``qualifier`` is the storage/inline specifier of the target (``HS_INLINE``
    for C, ``__device__ __forceinline__`` style for CUDA); ``name`` maps a kind
    to its function name and ``literal`` prints a constant of the type.
    """
    out = []
    for kind in kinds:
        params, body = _HELPER_BODIES[kind]
        body = body.format(zero=literal(0.0), one=literal(1.0))
        out.append(f"{qualifier} {ctype} {name(kind)}({params.format(T=ctype)})\n"
                   f"{{\n    {body}\n}}")
    return "\n".join(out) + ("\n" if out else "")
