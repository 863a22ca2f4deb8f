"""SymPy printer for CUDA device code: the C printer with CUDA spellings.

Everything that gives an expression its meaning (NaN-propagating ``Max``/``Min``,
``sign``, ``Heaviside``, ``Piecewise`` as nested ternaries with a NaN default,
powers expanded into products, literals rounded to the dtype) is inherited
from :class:`~heterosymnn.codegen.c_printer.CPrinter`; only the spellings
differ:

* helpers are ``static __device__ __forceinline__`` functions;
* NaN and infinity come from bit patterns (:data:`CUDA_CONSTANTS`): NVRTC
  compiles without ``<math.h>``, so ``NAN``/``INFINITY`` do not exist;
* math functions keep the C names (``sinf``/``expf`` for float32,
  ``sin``/``exp`` for float64): the CUDA math API uses the same ones;
* no vector-math aliases (those only exist to steer GCC's vectoriser).
"""
from __future__ import annotations

from heterosymnn.codegen.c_printer import CPrinter

#: Definitions the printed expressions may rely on (part of the CUDA prelude).
CUDA_CONSTANTS = """\
#define HS_NAN __longlong_as_double(0x7ff8000000000000LL)
#define HS_INF __longlong_as_double(0x7ff0000000000000LL)
"""


class CudaPrinter(CPrinter):
    """Print slotted SymPy expressions as CUDA C++ device expressions.

    Parameters and attributes are those of :class:`CPrinter`.
    """

    helper_prefix = "hs_"
    helper_qualifier = "static __device__ __forceinline__"
    nan_literal = "HS_NAN"
    inf_literal = "HS_INF"
    aliased_math: frozenset = frozenset()
