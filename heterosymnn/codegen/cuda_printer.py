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
  ``sin``/``exp`` for float64), which the CUDA math API shares, unless the
  function table gives a CUDA name;
* no vector-math aliases (those only exist to steer GCC's vectoriser).
"""
from __future__ import annotations

from typing import Mapping, Optional

import sympy as sp

from heterosymnn.codegen.c_printer import CPrinter
from heterosymnn.codegen.common import PrintedUsage
from heterosymnn.symbolic.functions import MATH_FUNCTIONS

# C base name -> CUDA base name, where they differ.
_CUDA_NAMES = {f.c: f.cuda for f in MATH_FUNCTIONS if f.c and f.cuda}

#: Definitions the printed expressions may rely on (part of the CUDA prelude).
CUDA_CONSTANTS = """\
#define HS_NAN __longlong_as_double(0x7ff8000000000000LL)
#define HS_INF __longlong_as_double(0x7ff0000000000000LL)
"""


class CudaPrinter(CPrinter):
    """Print slotted SymPy expressions as CUDA C++ device expressions.

    Parameters and attributes are those of :class:`CPrinter`, less ``aliased_math``.
    """

    helper_prefix = "hs_"
    helper_qualifier = "static __device__ __forceinline__"
    nan_literal = "HS_NAN"
    inf_literal = "HS_INF"

    def __init__(self, dtype: str, symbols: Mapping[sp.Symbol, str], *,
                 usage: Optional[PrintedUsage] = None) -> None:
        super().__init__(dtype, symbols, usage=usage)

    def math_name(self, base: str) -> str:
        return super().math_name(_CUDA_NAMES.get(base, base))
