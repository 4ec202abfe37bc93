"""check, sync, index, key: the manifest-to-tree commands (argparse and printing only)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from withcache import keys
from withcache.cli.common import (
    Subparsers,
    command,
    layout,
    manifest_paths,
    manifests_option,
    size_arg,
)
from withcache.errors import ManifestError, UsageError

if TYPE_CHECKING:
    from withcache.sync import Summary


# the commands register() adds
COMMANDS = ("check", "sync", "index", "key")


def register(sub: Subparsers, parent: argparse.ArgumentParser) -> None:
    p = command(sub, parent, "check", cmd_check)
    p.add_argument(
        "paths",
        nargs="*",
        type=Path,
        metavar="PATH",
        help="manifest files or directories (default: manifests/)",
    )
    p.add_argument(
        "--locked",
        action="store_true",
        help="also check withcache.lock: every unpinned entry locked, and (when the data "
        "dir exists) every byte the cache holds the locked one",
    )

    p = command(sub, parent, "sync", cmd_sync)
    manifests_option(p, "manifest file or directory", dest="paths")
    p.add_argument("-j", "--jobs", type=int, default=4, help="parallel downloads (default 4)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print what would be fetched and pruned, with sizes; change nothing",
    )
    p.add_argument(
        "--prune", action="store_true", help="remove artifacts whose URLs left the manifests"
    )
    p.add_argument(
        "--refresh",
        action="store_true",
        help="revalidate unpinned artifacts with the origin; re-fetch what changed",
    )
    p.add_argument(
        "--wait",
        action="store_true",
        help="wait for another sync on the same data dir instead of failing",
    )
    p.add_argument(
        "--locked",
        action="store_true",
        help="refuse any download whose bytes differ from withcache.lock, or that it "
        "does not list (see `withcache lock`)",
    )
    p.add_argument(
        "--no-index",
        action="store_true",
        help="do not re-render the index (it is re-rendered only when something changed)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds without data before a download is retried (default 60)",
    )
    p.add_argument(
        "--retries",
        type=int,
        default=3,
        help="retries per file on connection errors and 5xx (default 3)",
    )
    p.add_argument(
        "--min-rate",
        type=size_arg,
        metavar="SIZE",
        help="fail a download slower than SIZE per second over any 1 MiB (default 8K)",
    )
    p.add_argument(
        "--deadline",
        type=float,
        metavar="SECONDS",
        help="fail a download that takes longer than this in all (default: none)",
    )
    p.add_argument(
        "--max-size",
        type=size_arg,
        metavar="SIZE",
        help="stop a download that writes more than SIZE (default: store.max_size, else 64G)",
    )

    p = command(sub, parent, "index", cmd_index)
    p.add_argument(
        "--no-timestamp",
        action="store_true",
        help="leave the generation time out (reproducible output)",
    )

    p = command(sub, parent, "key", cmd_key)
    p.add_argument("urls", nargs="+", metavar="URL")
    p.add_argument("--keep-query", action="store_true", help="keep the query in the key")
    p.add_argument("--json", action="store_true", help="one JSON object per URL")


def cmd_check(args: argparse.Namespace) -> int:
    """Validate manifests: every problem as file:line, exit 2 if any.

    Checks YAML syntax, unknown fields, URLs (http(s) only, no credentials),
    sha256 pins, duplicate keys across files, keys that collide once the query
    is dropped, and mirrors (sources, paths, GLEP 75 places, BLAKE2B/SHA512
    pins). Makes no network request: safe as a pull-request gate.
    --locked also checks manifests/withcache.lock (see `withcache lock`).

    example:
      withcache check                    # everything under manifests/
      withcache check manifests/cuda.yaml -v
      withcache check --locked --data /srv/withcache
    """
    from withcache import manifest

    m = manifest.load(manifest_paths(args.paths))
    if args.locked:
        from withcache import lockfile, store

        lock = lockfile.load(lockfile.path_for(m.files))
        lay = layout(args)
        records = store.read_artifacts(lay.db) if lay.db.exists() else None
        problems = lockfile.check(lock, m, records)
        if problems:
            raise ManifestError(problems)
    if args.verbose:
        python = f", {len(m.python)} python sections" if m.python else ""
        python += f", {len(m.indexes)} private indexes" if m.indexes else ""
        mirrors = ""
        if m.mirrors:
            n = sum(len(x.files) for x in m.mirrors)
            mirrors = f", {len(m.mirrors)} mirrors ({n} files)"
        locked = ", lock ok" if args.locked else ""
        print(
            f"{len(m.files)} manifest files, {len(m.entries)} artifacts{python}{mirrors}"
            f"{locked}: ok"
        )
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    """Fetch every manifest entry into the tree, verified and atomic, then re-index.

    Entries already present and verified cost no network. Downloads resume
    after a crash or a dropped connection. Exit 1 if any download failed (after
    all the others finished).

    example:
      withcache sync --data /srv/withcache -j 8
      withcache sync --dry-run           # what a reviewer wants to see
      withcache sync --refresh --locked  # revalidate; refuse bytes the lock does not name
    """
    if args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    from withcache import budget, fetch, lockfile, manifest, sync  # imported when it runs
    from withcache.progress import for_stream
    from withcache.storeconfig import one

    lay = layout(args)
    m = manifest.load(manifest_paths(args.paths), env=os.environ)
    lock = lockfile.load(lockfile.path_for(m.files)) if args.locked else None
    opts = sync.Options(
        jobs=args.jobs,
        refresh=args.refresh,
        prune=args.prune,
        wait=args.wait,
        index=not args.no_index,
        policy=fetch.Policy(
            read_timeout=args.timeout,
            attempts=args.retries + 1,
            deadline=args.deadline,
            max_size=args.max_size or budget.max_size(one(m.store)),  # the flag wins
            **{k: v for k in ("min_rate",) if (v := getattr(args, k)) is not None},
        ),
        lock=lock,
    )
    if args.dry_run:
        say = (lambda _msg: None) if args.quiet else _note
        print("\n".join(sync.preview(lay, m, opts, say)))
        return 0
    try:
        summary = sync.run(lay, m, opts, for_stream(sys.stderr, quiet=args.quiet))
    except KeyboardInterrupt:
        # Workers blocked on a slow origin would hold the exit up to a read timeout.
        # Everything on disk is already crash-safe (kill -9 leaves it consistent),
        # so leave at once; the next sync resumes the partial downloads.
        print(
            "withcache: interrupted; the next sync resumes where this one stopped",
            file=sys.stderr,
            flush=True,
        )
        sys.stdout.flush()
        os._exit(130)
    return _print_summary(summary, quiet=args.quiet)


def _note(msg: str) -> None:
    print(msg, file=sys.stderr)


def _print_summary(summary: Summary, *, quiet: bool) -> int:
    """The summary line always; then one line per failure; exit 1 if any failed."""
    if not quiet or summary.failed:
        print(f"sync: {summary.line()}", file=sys.stderr)
    for note in summary.warnings:
        print(f"withcache: warning: {note}", file=sys.stderr)
    for w, error in summary.failed:
        print(f"withcache: error: fetch {w.url} ({w.where}): {error}", file=sys.stderr)
    if summary.failed:
        print(
            f"withcache: error: {len(summary.failed)} of {summary.total} downloads failed",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    """Re-render www/index.html and www/catalog.json from the state DB.

    sync does this at its end; run it alone after editing templates.

    example:
      withcache index --data /srv/withcache
    """
    from withcache import index

    n = index.render(layout(args), timestamp=not args.no_timestamp)
    if args.verbose:
        print(f"indexed {n} artifacts")
    return 0


def cmd_key(args: argparse.Namespace) -> int:
    """Print the key and the cache path of origin URLs.

    example:
      withcache key https://vendor.example/cuda_12.6.run
      curl -I "http://cache-host$(withcache key -q https://vendor.example/cuda_12.6.run)"
    """
    status = 0
    for url in args.urls:
        try:
            key = keys.normalize(url, args.keep_query)
        except keys.NotCacheable as exc:
            print(f"withcache: error: {url}: {exc}", file=sys.stderr)
            status = 2
            continue
        path = keys.cache_path(key)
        if args.json:
            print(json.dumps({"url": url, "key": key, "token": keys.token(key), "path": path}))
        elif args.quiet:
            print(path)
        else:
            print(f"{path}\n  key: {key}")
    return status
