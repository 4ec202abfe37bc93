"""The `withcache` command: argparse only. Each command parses, calls one core
function and maps WithcacheError to an exit code (0 ok, 1 runtime failure,
2 bad usage or bad manifest, 130 interrupted). Anything else is a bug and shows
a traceback.
"""

from __future__ import annotations

import argparse
import gc
import sys
import traceback
from collections.abc import Sequence

from withcache import __version__
from withcache.cli import (
    budget,
    bundle,
    indexes,
    lock,
    replicate,
    review,
    serve,
    shims,
    sync,
    watch,
)
from withcache.cli.common import add_common, common_parent
from withcache.errors import WithcacheError

COMMAND_MODULES = (sync, lock, serve, watch, review, shims, budget, bundle, indexes, replicate)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole CLI, or only `command` when one is named: argparse spends ~15 ms on
    every argument it registers, which `withcache key` should not pay for `serve`'s."""
    parser = argparse.ArgumentParser(
        prog="withcache",
        description="An operator-curated artifact cache: manifests in git, a verified static "
        "tree, nginx in front.",
        epilog="Run 'withcache COMMAND --help' for a command's options and an example.",
    )
    parser.add_argument("--version", action="version", version=f"withcache {__version__}")
    add_common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parent = common_parent()
    for module in COMMAND_MODULES:
        if command is None or command in module.COMMANDS:
            module.register(sub, parent)
    return parser


def named_command(argv: Sequence[str]) -> str | None:
    """The command argv names, read without parsing: the first word that is neither an
    option nor --data's value. None when there is none, or it is no command (then the
    whole parser lists them all in its error or help)."""
    words = iter(argv)
    for word in words:
        if word == "--data":
            next(words, None)
        elif not word.startswith("-"):
            known = any(word in m.COMMANDS for m in COMMAND_MODULES)
            return word if known else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(named_command(argv))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except WithcacheError as exc:
        if args.traceback:
            traceback.print_exc()
        for line in str(exc).splitlines() or ["error"]:
            print(f"withcache: error: {line}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("withcache: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1


def run() -> int:
    """The process's entry point (the console script, `python -m withcache`): main(),
    then a quick exit. Objects frozen at the end are skipped by the interpreter's last
    collection, which otherwise walks every module's objects: ~40 ms of every command
    here. Tests call main() instead, in a process that goes on."""
    code = main()
    gc.freeze()
    return code
