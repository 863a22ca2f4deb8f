"""``python -m heterosymnn <command>`` (also the ``heterosymnn`` console script)."""
from __future__ import annotations

import importlib
import sys
from typing import Optional, Sequence

COMMANDS = {
    "doctor": ("heterosymnn.doctor", "report platform, compilers, CUDA, cache; check every backend live [--json]"),
    "show": ("heterosymnn.show", "show how formulas parse, their derivatives, slots and generated source"),
    "demo": ("heterosymnn.demo", "build a heterogeneous layer on every backend, check it, time it"),
    "cache": ("heterosymnn.cache.__main__", "inspect or clean the kernel cache (info|list|clear|prune)"),
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = [f"  {name:<8} {help_text}" for name, (_, help_text) in COMMANDS.items()]
        print("usage: python -m heterosymnn <command> [options]\n\ncommands:\n" + "\n".join(lines))
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nunknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
