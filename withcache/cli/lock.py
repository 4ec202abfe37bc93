"""lock: write withcache.lock next to the manifests (argparse and printing only)."""

from __future__ import annotations

import argparse
import sys

from withcache.cli.common import Subparsers, command, layout, manifest_paths, manifests_option

# the commands register() adds
COMMANDS = ("lock",)


def register(sub: Subparsers, parent: argparse.ArgumentParser) -> None:
    p = command(sub, parent, "lock", cmd_lock)
    manifests_option(p, "manifest file or directory; the lock goes next to the first")


def cmd_lock(args: argparse.Namespace) -> int:
    """Write withcache.lock next to the manifests: the bytes the cache trusts, for review.

    One line per unpinned artifact and per Python index file: the sha256 the cache
    holds. Trust on first use, made explicit: `withcache sync --locked` then refuses any
    download whose bytes differ from the lock (an origin that changed a file in place
    under the same URL) and names the lock's line; `withcache check --locked` checks
    the lock in CI. Reads the data dir's records; makes no network request.

    example:
      withcache lock --data /srv/withcache -m manifests/
      git add manifests/withcache.lock && git commit -m "lock: reviewed bytes"
    """
    from withcache import lockfile, manifest, store  # imported when it runs: quick start-up

    m = manifest.load(manifest_paths(args.manifests))
    lay = layout(args)
    records = store.read_artifacts(lay.db)
    locked = lockfile.locked_records(m, records)
    path = lockfile.path_for(m.files)
    lockfile.write(path, locked)
    if not args.quiet:
        print(f"wrote {len(locked)} entries to {path}", file=sys.stderr)
    return 0
