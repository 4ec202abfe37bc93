"""The `withcache` command: argparse only. Each command parses, calls one core
function and maps WithcacheError to an exit code (0 ok, 1 runtime failure,
2 bad usage or bad manifest, 130 interrupted). Anything else is a bug and shows
a traceback.
"""

from __future__ import annotations

import argparse
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


def build_parser() -> argparse.ArgumentParser:
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
        module.register(sub, parent)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
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
