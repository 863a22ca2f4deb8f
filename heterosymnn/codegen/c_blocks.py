"""The loop of every C row function: whole blocks of a fixed width, the tail padded.

Why blocks
----------
A vectorised loop ``for (i = 0; i < n; ++i)`` is compiled twice: a vector body
(libmvec's ``_ZGVdN8v_sinf`` & co.) and a scalar remainder (``sinf``), and the
two round differently. An element's bits would then depend on where it sits: its
column, the batch size, the chunk a thread got, 1-D or 2-D, the layout. So a row
function has one loop, ``for (i = 0; i < hs_count; ++i)`` (``hs_count`` masked to a whole
number of blocks, so no remainder loop is even emitted), run first over the whole
blocks of ``HS_BLOCK_<TAG>`` elements (a multiple of any vector width the vectoriser
takes, so its remainder never runs), then once more over one padded block: the last,
partial block's inputs are copied into stack buffers (the padding repeats the last
element, so it never takes a special-case lane such as ``log(0)``), the loop runs
there, and the valid results are copied back. One loop in the text, not two with the
same body: GCC was seen to if-convert one copy and leave the other scalar. Every
element goes through the same instructions whatever its position, with or without
OpenMP, with or without libmvec; ``tests/codegen/test_codegen_batch_invariance.py``
checks it under each flag set.

The loop runs over pointers that shadow the row function's ``a``/``b``/``g``/``out``,
so the element statements of :func:`heterosymnn.codegen.lowering.element_body` are
used unchanged (and stay those of the CUDA kernels).
"""
from __future__ import annotations

from typing import Callable, List, Sequence

#: Element pointers a row function may read, in parameter order.
POINTERS = ("a", "b", "g")

#: The block widths, chosen by the ISA the module is compiled for: 16 elements with
#: AVX-512, otherwise 8 (one AVX vector of floats, two of doubles, two SSE2/NEON
#: vectors of floats). Doubles get as many as floats because beside 32-bit ``int``
#: temporaries (conditions) the vectoriser may take 8 doubles at a time. If it ever
#: took more than a block, the padded block would run in the scalar remainder: the
#: test of batch invariance says so. 128 (a span, a tile) is a multiple of each.
BLOCK_MACROS = """\
#ifndef HS_BLOCK_F32
#  if defined(__AVX512F__)
#    define HS_BLOCK_F32 16
#    define HS_BLOCK_F64 16
#  else
#    define HS_BLOCK_F32 8
#    define HS_BLOCK_F64 8
#  endif
#endif
"""


def block_macro(tag: str) -> str:
    """The C macro of the block width of a dtype tag (``f32`` -> ``HS_BLOCK_F32``)."""
    return f"HS_BLOCK_{tag.upper()}"


def pad_buffers(ctype: str, tag: str, read: Sequence[str]) -> List[str]:
    """Declarations of the padded tail buffers: one per pointer read, and one for ``out``."""
    width = block_macro(tag)
    return [f"    {ctype} hs_pad_{name}[{width}];" for name in [*_ordered(read), "out"]]


def block_loop(ctype: str, tag: str, read: Sequence[str], statements: Sequence[str], *,
               first: str, limit: str, restrict: bool,
               scope: Callable[[str], Sequence[str]] = lambda offset: (), indent: int = 1) -> List[str]:
    """Lines that run ``statements`` on the elements ``first .. limit-1``, each one alike.

    The whole blocks run as one loop (a multiple of every vector width the compiler may
    pick, so its scalar remainder never runs); a partial last block is padded into the
    stack buffers of :func:`pad_buffers` and runs through the same loop once more, for
    exactly one block.

    Parameters
    ----------
    ctype, tag : str
        C type and dtype tag (``float``/``f32``).
    read : sequence of str
        The pointers among ``a``, ``b``, ``g`` that ``statements`` read.
    statements : sequence of str
        The body of ``for (int64_t i = 0; i < count; ++i)``, over ``a[i]``, ``out[i]`` ...
        (pointers shadowed so that ``i`` counts from the loop's first element).
    first, limit : str
        C expressions: the elements ``first .. limit-1`` are processed.
    restrict : bool
        Whether the shadowing pointers are ``restrict`` (as the function's parameters are).
    scope : callable
        ``scope(offset)``: declarations placed before the loop, whose element ``i`` is
        element ``first + offset + i`` (``dq0 = dp0 + offset`` and the like); ``offset``
        is a C expression.
    indent : int
        Indentation level (4 spaces each).
    """
    width = block_macro(tag)
    star = "*HS_RESTRICT " if restrict else "*"
    pointers = _ordered(read)
    pad, at = "    " * indent, "    " * (indent + 1)
    lines = [f"{pad}{{",
             f"{at}const int64_t hs_n = {limit} - {first};",
             f"{at}const int64_t hs_full = hs_n - hs_n % {width};"]
    lines += [f"{at}const {ctype} *hs_{p} = {p} + {first};" for p in pointers]
    scoped = list(scope("hs_at"))  # hs_at: where the loop's element 0 sits, only when needed
    lines += [f"{at}{ctype} *hs_out = out + {first};",
              f"{at}int64_t hs_count = hs_full{', hs_at = 0' if scoped else ''};",
              # One loop in the text, run a second time on the padded tail: two loops with
              # the same body may still be compiled differently (GCC if-converted one and
              # left the other scalar), one loop cannot. Not a counted loop, so it is not
              # unrolled into two copies either.
              f"{at}for (;;) {{",
              f"{at}    {{"]
    lines += [f"{at}        const {ctype} {star}{p} = hs_{p};" for p in pointers]
    lines += [f"{at}        {ctype} {star}out = hs_out;"]
    lines += [f"{at}        {line}" for line in scoped]
    # hs_count is always a whole number of blocks; masking says so to the compiler (GCC
    # reads the trailing zero bits of the trip count), which then emits no scalar or
    # half-width remainder loop after the vector body: that code never ran, but it sat in
    # every row function, between the loop and its exit.
    lines += [f"{at}        HS_SIMD_LOOP",
              f"{at}        for (int64_t i = 0; i < (hs_count & -(int64_t){width}); ++i) {{"]
    lines += [f"{at}            {line.strip()}" for line in statements]
    lines += [f"{at}        }}", f"{at}    }}",
              f"{at}    if (hs_out == hs_pad_out || hs_full == hs_n)",
              f"{at}        break;",
              f"{at}    {{"]
    lines += [f"{at}        const {ctype} hs_last_{p} = hs_{p}[hs_n - 1];" for p in pointers]
    # Vectorised (masked loads and stores with AVX2), not unrolled into scalar stores: a
    # vector load of lanes just stored one by one would wait for every store.
    lines += [f"{at}        HS_SIMD_LOOP", f"{at}        for (int64_t j = 0; j < {width}; ++j) {{"]
    lines += [f"{at}            hs_pad_{p}[j] = j < hs_n - hs_full ? hs_{p}[hs_full + j] : hs_last_{p};"
              for p in pointers]
    lines += [f"{at}        }}", f"{at}    }}"]
    lines += [f"{at}    hs_{p} = hs_pad_{p};" for p in pointers]
    lines += [f"{at}    hs_out = hs_pad_out;",
              f"{at}    hs_count = {width};",
              *([f"{at}    hs_at = hs_full;"] if scoped else []),
              f"{at}}}",
              f"{at}if (hs_out == hs_pad_out) {{",
              f"{at}    {ctype} *hs_to = out + {first} + hs_full;",
              f"{at}    HS_SIMD_LOOP",
              f"{at}    for (int64_t j = 0; j < {width}; ++j)",
              f"{at}        if (j < hs_n - hs_full)",
              f"{at}            hs_to[j] = hs_pad_out[j];",
              f"{at}}}",
              f"{pad}}}"]
    return lines


def _ordered(read: Sequence[str]) -> List[str]:
    unknown = set(read) - set(POINTERS)
    if unknown:
        raise ValueError(f"unknown element pointers {sorted(unknown)}; expected some of {POINTERS}")
    return [p for p in POINTERS if p in set(read)]
