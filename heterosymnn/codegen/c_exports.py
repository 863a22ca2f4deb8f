"""How a generated C module tells its loader where its row functions are.

The driver calls row functions through pointers, never from Python, so cffi needs only
their addresses. Declaring the functions in the cdef instead would make cffi generate a
Python wrapper for each, and optimising those wrappers took more than half the compiler's
time on a module of a few functions (4 structures at -O3: 0.36-0.51 s with the wrappers,
0.16-0.22 s without), time every cold start waits for. So a module defines two tables, the
functions' addresses and their names in the same order, and declares only those.

SymPy-free: the warm path reads the tables of modules it loads from the cache.
"""
from __future__ import annotations

import types
import weakref
from typing import Any, Mapping, Sequence, Tuple

ADDRESS_TABLE = "hs_row_addresses"
NAME_TABLE = "hs_row_names"


_UNUSED_MACRO = """\
#ifndef HS_EXPORT_TABLE
#  if defined(__GNUC__)
#    define HS_EXPORT_TABLE __attribute__((unused))
#  else
#    define HS_EXPORT_TABLE
#  endif
#endif
"""


def export_tables(names: Sequence[str]) -> Tuple[str, str]:
    """(C definitions, cffi cdef) of the tables exporting the functions ``names``.

    The addresses are stored as ``void (*)(void)``: casting a function's address to another
    function pointer type keeps it an address constant of standard C, which every compiler
    (MSVC included) accepts in a static initializer; casting it to an integer is an extension.
    Both tables are ``static`` (cffi's accessors live in the same file): every module uses
    the same two names, and a process that loads extensions with ``RTLD_GLOBAL`` would
    otherwise bind one module's accessor to another module's tables. Compiled without cffi's
    accessors (the source alone, as ``render_c`` shows it), nothing reads them: marked unused
    so that ``-Wall -Werror`` stays quiet.
    """
    if not names:
        return "", ""
    count = len(names)
    source = (_UNUSED_MACRO
              + f"static HS_EXPORT_TABLE void (*const {ADDRESS_TABLE}[{count}])(void) = {{\n"
              + "".join(f"    (void (*)(void))&{name},\n" for name in names) + "};\n"
              f"static HS_EXPORT_TABLE const char *const {NAME_TABLE}[{count}] = {{\n"
              + "".join(f'    "{name}",\n' for name in names) + "};")
    cdef = f"extern void (*const {ADDRESS_TABLE}[{count}])(void);\nextern const char *const {NAME_TABLE}[{count}];\n"
    return source, cdef


def exported_functions(module: Any) -> Mapping[str, int]:
    """Name -> address of every function a loaded cffi module exports through its tables
    (empty for a module without them); read once per module (a 24-structure module's tables
    take ~35 us to read, and a layer asks once per structure)."""
    known = _EXPORTED.get(module)
    if known is None:
        lib, ffi = module.lib, module.ffi
        known = {} if not hasattr(lib, ADDRESS_TABLE) else {
            ffi.string(name).decode("ascii"): int(ffi.cast("uintptr_t", address))
            for name, address in zip(getattr(lib, NAME_TABLE), getattr(lib, ADDRESS_TABLE))}
        _EXPORTED[module] = known = types.MappingProxyType(known)
    return known


#: Module -> its exports; forgets a module when it is collected (the memory layer drops modules).
_EXPORTED: "weakref.WeakKeyDictionary[Any, Mapping[str, int]]" = weakref.WeakKeyDictionary()
