"""replicate: push the served tree to replicas (rsync), in an order that keeps each
replica consistent even if the push is killed."""

from __future__ import annotations

import argparse
import sys

from withcache.cli.common import Subparsers, command, layout

# the commands register() adds
COMMANDS = ("replicate",)


def register(sub: Subparsers, parent: argparse.ArgumentParser) -> None:
    p = command(sub, parent, "replicate", cmd_replicate)
    p.add_argument(
        "dests",
        nargs="+",
        metavar="DEST",
        help="an rsync destination: /local/path, host:/path, host::module/path or "
        "rsync://host/module/path",
    )
    p.add_argument(
        "--wait", action="store_true", help="wait for a running sync or replicate to finish"
    )
    p.add_argument(
        "--rsync-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="pass ARG to every rsync call, repeatable (--rsync-arg=--bwlimit=50m, "
        "--rsync-arg=--rsh='ssh -p 2222')",
    )


def cmd_replicate(args: argparse.Namespace) -> int:
    """Copy DATA/www/ to replicas with rsync; each DEST becomes a data dir to serve.

    Blobs go first, then pages (deepest first), each file atomically, deletions
    last: a replica never lists or links a file it does not hold, even if this is
    killed at any moment. An unchanged tree costs one rsync --dry-run per DEST.
    On the replica run `withcache serve --data DEST` and `withcache watch --data
    DEST`; bring its misses back with `withcache misses import`.

    example:
      withcache replicate --data /srv/withcache /srv/replica replica-b:/srv/withcache
      ssh replica-b withcache misses --json --data /srv/withcache > b.json
      withcache misses import b.json
    """

    from withcache import replicate  # imported when it runs: quick start-up

    def say(msg: str) -> None:
        if not args.quiet:
            print(f"withcache: {msg}", file=sys.stderr, flush=True)

    replicate.run(layout(args), args.dests, wait=args.wait, rsync_args=args.rsync_arg, say=say)
    return 0
