"""``python -m heterosymnn.cache info|list|clear|prune --max-size SIZE|export|import|warm``.

Exit status: 0 done, 1 not entirely done (an entry in use was skipped, or prune
could not get under the limit), 2 usage error.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from typing import Any, Dict, List, Optional, Sequence

from ..config import override
from . import manage


def _size_arg(text: str) -> int:
    try:
        return manage.parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m heterosymnn.cache",
        description="Inspect and trim the heterosymnn kernel cache "
                    "(HETEROSYMNN_CACHE_DIR, or the per-user cache directory).",
    )
    parser.add_argument("--cache-dir", help="use this cache directory instead of the configured one")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, text in (("info", "directory, size, entries, builds logged, leftovers"),
                       ("list", "one line per entry, least recently used first")):
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument("--json", action="store_true", help="print JSON")
    cmd = sub.add_parser("clear", help="remove every entry and stale build directories")
    cmd.add_argument("--json", action="store_true", help="print JSON")
    cmd = sub.add_parser("prune", help="remove least recently used entries down to a size")
    cmd.add_argument("--max-size", required=True, type=_size_arg, metavar="SIZE",
                     help="e.g. 500M, 2G or 1024 (bytes); K/M/G/T are binary multiples")
    cmd.add_argument("--json", action="store_true", help="print JSON")
    _bundle_commands(sub)
    _warm_command(sub)
    return parser


def _warm_command(sub: Any) -> None:
    from .warm_cli import add_warm_parser

    add_warm_parser(sub)


def _bundle_commands(sub: Any) -> None:
    cmd = sub.add_parser("export", help="write cache entries into one portable bundle file")
    cmd.add_argument("bundle", metavar="BUNDLE", help="the file to write (e.g. layers.hsb)")
    cmd.add_argument("--configs", metavar="FILE",
                     help="only what this JSON layer file needs (a list of layers, each a list of node "
                          "configs), building what is missing first")
    cmd.add_argument("--targets", nargs="+", default=None, metavar="TARGET",
                     help="cpu, cuda or CUDA architectures such as sm_80 (default: every entry; "
                          "with --configs: cpu)")
    cmd.add_argument("--dtype", nargs="+", default=["float32"], metavar="DTYPE",
                     help="with --configs: float32 and/or float64 (default: float32)")
    cmd.add_argument("--mode", nargs="+", default=["activation"], metavar="MODE",
                     help="with --configs: activation and/or loss (default: activation)")
    cmd.add_argument("--json", action="store_true", help="print JSON")
    cmd = sub.add_parser("import", help="verify a bundle and publish its entries into the cache")
    cmd.add_argument("bundle", metavar="BUNDLE", help="a file written by export")
    cmd.add_argument("--json", action="store_true", help="print JSON")


def _human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover


def _when(stamp: float) -> str:
    return datetime.datetime.fromtimestamp(stamp).isoformat(sep=" ", timespec="seconds")


def _summary(metadata: Dict[str, Any]) -> str:
    parts = []
    for name, value in sorted(metadata.items()):
        text = value if isinstance(value, str) else json.dumps(value)
        parts.append(f"{name}={text if len(text) <= 40 else text[:37] + '...'}")
    return " ".join(parts)


def _print_info(info: Dict[str, Any]) -> None:
    print(f"directory:      {info['directory']}{'' if info['exists'] else ' (does not exist yet)'}")
    print(f"size:           {info['size_bytes']} bytes ({_human(info['size_bytes'])})")
    print(f"entries:        {info['entries']} ({info['entries_bytes']} bytes)")
    print(f"builds logged:  {info['builds_logged']} ({info['removals_logged']} entries removed by clear/prune)")
    print(f"lock files:     {info['lock_files']} ({info['locks_held']} held by running builds; "
          f"the others were left by killed processes)")
    print(f"temp dirs:      {info['temp_dirs']} ({info['stale_temp_dirs']} stale, left by killed builds)")
    if info["other_schemas"]:
        print(f"older schemas:  {', '.join(info['other_schemas'])} (safe to delete)")


def _print_list(rows: List[Dict[str, Any]]) -> None:
    if not rows:
        print("no cache entries", file=sys.stderr)
    for row in rows:
        status = "" if row["status"] == "ok" else f"  [BROKEN: {row['status']}]"
        print(f"{row['key']}  {_human(row['size_bytes']):>10}  {_when(row['created'])}  "
              f"{_summary(row['metadata'])}{status}")


def _run(args: argparse.Namespace) -> int:
    if args.command == "warm":
        from .warm_cli import run_warm_command  # builds: only when asked for

        return run_warm_command(args)
    if args.command in ("export", "import"):
        from .bundle_cli import run_bundle_command  # the bundle modules only when asked for

        return run_bundle_command(args)
    if args.command in ("info", "list"):
        data = manage.cache_info() if args.command == "info" else manage.list_entries()
        if args.json:
            print(json.dumps(data, indent=2))
        elif args.command == "info":
            _print_info(data)
        else:
            _print_list(data)
        return 0
    if args.command == "clear":
        report = manage.clear()
        text = (f"removed {report['removed']} entries, {report['temp_removed']} stale temp dirs and "
                f"{report['locks_removed']} stale lock files from {report['directory']}")
    else:
        report = manage.prune(args.max_size)
        text = (f"removed {report['removed']} entries ({_human(report['freed_bytes'])}); "
                f"{report['directory']} now holds {_human(report['remaining_bytes'])} of entries "
                f"(limit {_human(report['max_bytes'])})")
    print(json.dumps(report, indent=2) if args.json else text)
    for note in report["skipped"]:
        print(f"note: {note}", file=sys.stderr)
    incomplete = report["skipped"] or report.get("remaining_bytes", 0) > report.get("max_bytes", float("inf"))
    return 1 if incomplete else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse reports usage errors by exiting with 2
        return int(exc.code or 0)
    try:
        if args.cache_dir:
            with override(cache_dir=args.cache_dir):
                return _run(args)
        return _run(args)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
