"""misses, report, add: the review loop (what was missed, what is new, into a manifest)."""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from withcache.cli.common import (
    DEFAULT_ADD_FILE,
    DEFAULT_MANIFESTS,
    Subparsers,
    command,
    layout,
    manifests_option,
)
from withcache.errors import ManifestError, UsageError
from withcache.fmt import json_text, visible, when
from withcache.layout import Layout

if TYPE_CHECKING:
    from withcache.misses import MissRow

# report.FORMATS, named here so that building the parser imports no core module (every
# command's start-up pays for what this file imports); a test keeps the two equal.
REPORT_FORMATS = ("text", "markdown", "html", "json")


# the commands register() adds
COMMANDS = ("misses", "report", "add")


def register(sub: Subparsers, parent: argparse.ArgumentParser) -> None:
    p = command(sub, parent, "misses", cmd_misses)
    p.add_argument(
        "action",
        nargs="?",
        choices=["list", "dismiss", "import"],
        default="list",
        help="list (default), dismiss the given URLs / Python projects for good, or "
        "import other hosts' `misses --json` files",
    )
    p.add_argument(
        "targets", nargs="*", metavar="URL", help="with dismiss: what to hide; with import: FILEs"
    )
    p.add_argument(
        "--source", metavar="NAME", help="with import: the host a file without source ids is from"
    )
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="a JSON array of objects")
    fmt.add_argument("--yaml", action="store_true", help="a manifest snippet, ready to paste")
    p.add_argument("--all", action="store_true", help="include dismissed and cached ones")
    p.add_argument("--limit", type=int, default=None, help="show at most this many")
    p.add_argument(
        "--since",
        metavar="AGE",
        help="only misses requested within AGE (7d, 12h, 30m, 2w)",
    )

    p = command(sub, parent, "report", cmd_report)
    p.add_argument("--format", choices=REPORT_FORMATS, default="text", help="default: text")
    p.add_argument(
        "--html",
        dest="format",
        action="store_const",
        const="html",
        help="same as --format html (also writes www/report.html)",
    )
    manifests_option(p, "manifests, to tell which auto-filled artifacts are committed")
    p.add_argument(
        "--peek",
        action="store_true",
        help="show the report without marking it as sent (the next one repeats it)",
    )

    p = command(sub, parent, "add", cmd_add)
    p.add_argument("urls", nargs="*", metavar="URL")
    p.add_argument(
        "--python",
        action="append",
        metavar="NAME",
        help="add a Python project to a python: section's requirements instead (repeatable)",
    )
    p.add_argument(
        "-m",
        "--manifest",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"manifest file to append to (default: {DEFAULT_ADD_FILE}, created if missing; "
        "with --python: the one whose on_demand admits the project)",
    )
    p.add_argument(
        "--sha256",
        action="append",
        metavar="HEX",
        help="pin the hash; give it once per URL, in the same order",
    )
    p.add_argument("--keep-query", action="store_true", help="keep the query in the key")
    p.add_argument(
        "--mirror",
        metavar="NAME",
        help="add paths (or bare distfile names) to this mirror's files instead of URLs "
        "to artifacts; the manifest that defines the mirror is edited",
    )
    p.add_argument(
        "--against",
        action="append",
        type=Path,
        metavar="PATH",
        help="manifests to refuse duplicates of (default: manifests/)",
    )


def cmd_misses(args: argparse.Namespace) -> int:
    """List misses awaiting review, most requested first; or dismiss some for good.

    A miss is an origin URL (or a Python project) someone asked the cache for and
    did not get. It leaves the list once its key is in a manifest and synced, or
    when dismissed. --yaml prints a snippet ready to paste into a manifest.

    example:
      withcache misses
      withcache misses --since 7d
      withcache misses --yaml >> manifests/review.yaml   # then edit, check, PR
      withcache misses dismiss https://vendor.example/typo.run torch
      ssh replica withcache misses --json | withcache misses import -   # merge a replica's
    """
    from withcache import misses, missimport, store  # imported when it runs

    lay = layout(args)
    if args.action == "import":
        return _import(lay, args.targets, args.source, quiet=args.quiet)
    conn = store.connect(lay.db)
    try:
        if args.action == "dismiss":
            return _dismiss(conn, args.targets, quiet=args.quiet)
        if args.targets:
            raise UsageError("URLs are only taken by `withcache misses dismiss URL...`")
        where, params = "", ()  # type: tuple[str, tuple[float, ...]]
        if args.since:
            try:
                age = misses.parse_age(args.since)
            except ValueError as exc:
                raise UsageError(f"--since: {exc}") from None
            where, params = "m.last_seen >= ?", (time.time() - age,)
        rows = misses.listing(
            conn, lay.www, everything=args.all, limit=args.limit, where=where, params=params
        )
        source = missimport.instance_id(conn) if args.json else ""
    finally:
        conn.close()
    if args.json:  # `source` lets another host's `misses import` add only what is new
        print(json_text([dict(r.as_json(), source=source) for r in rows], indent=1))
    elif args.yaml:
        sys.stdout.write(misses.snippet([r for r in rows if r.status == misses.OPEN]))
    else:
        _print_misses(rows, show_status=args.all, quiet=args.quiet)
    return 0


def _import(lay: Layout, files: list[str], source: str | None, *, quiet: bool) -> int:
    from withcache import missimport, store

    if not files:
        raise UsageError(
            "import what? give `withcache misses --json` files of other hosts (- for stdin)"
        )
    batches = [(f, missimport.read(f, source)) for f in files]  # every file checked first
    conn = store.connect(lay.db)
    try:
        for f, rows in batches:
            s = missimport.merge(conn, rows, f)
            if not quiet:
                print(
                    f"{f}: {s.rows} misses from {', '.join(s.sources) or 'nowhere'}: "
                    f"{s.new} new here, {s.requests} requests added",
                    file=sys.stderr,
                )
    finally:
        conn.close()
    return 0


def _dismiss(conn: sqlite3.Connection, targets: list[str], *, quiet: bool) -> int:
    from withcache import misses

    if not targets:
        raise UsageError("dismiss what? give the URLs or Python project names to hide")
    try:
        done = misses.dismiss(conn, targets)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not quiet:
        for key, seen in done:
            note = "" if seen else " (not seen yet: hidden in advance)"
            print(f"dismissed {visible(key)}{note}")
    return 0


def _print_misses(rows: list[MissRow], *, show_status: bool, quiet: bool) -> None:
    if not rows:
        if not quiet:
            print("No misses awaiting review.")
        return
    status = f"  {'STATUS':9}" if show_status else ""
    print(f"{'REQUESTS':>8}  {'CLIENTS':>7}  {'LAST SEEN (UTC)':16}{status}  WANTED")
    for r in rows:
        st = f"  {r.status:9}" if show_status else ""
        what = visible(r.url)
        if r.kind == "project":
            what = f"Python project {what}  -> requirements: [{what}]"
        print(f"{r.count:>8}  {r.clients:>7}  {when(r.last_seen) or 'never':16}{st}  {what}")
    if not quiet:
        print(
            f"\n{len(rows)} shown. Add with `withcache add URL...` or `withcache misses --yaml`; "
            "hide with `withcache misses dismiss URL`.",
            file=sys.stderr,
        )


def cmd_report(args: argparse.Namespace) -> int:
    """What is new since the previous report; prints nothing when nothing is (for cron).

    News: new misses (with counts and a ready-to-paste line), artifacts that failed
    to sync, new auto-filled artifacts not yet in a manifest. With news, it also
    shows the hit ratio and bytes served since the previous report, the top
    artifacts and disk use. --format html also writes DATA/www/report.html, linked
    from the index. Cron mails a job's output only when there is some.

    example:
      withcache report --data /srv/withcache
      # crontab: 0 7 * * *  withcache report --data /srv/withcache --format markdown
    """
    from withcache import report

    lay = layout(args)
    keys = None
    try:
        keys = report.manifest_keys(args.manifests or [DEFAULT_MANIFESTS])
    except ManifestError as exc:
        print(
            f"withcache: warning: manifests have problems ({len(exc.problems)}); "
            "listing every auto-filled artifact. Run `withcache check`.",
            file=sys.stderr,
        )
    report.run(lay, args.format, sys.stdout, manifest_keys=keys, peek=args.peek)
    return 0


def _add_mirror(args: argparse.Namespace, hashes: list[str]) -> int:
    from withcache import add

    if args.keep_query:
        raise UsageError("--keep-query is for URLs; mirror paths have no query")
    files = [
        add.NewMirrorFile(path, hashes[i] if hashes else None) for i, path in enumerate(args.urls)
    ]
    target = add.add_mirror_files(args.mirror, files, args.against or [DEFAULT_MANIFESTS])
    if not args.quiet:
        n = len(files)
        print(
            f"added {n} file{'' if n == 1 else 's'} to mirror {args.mirror} in {target}; "
            "next: withcache check, commit, pull request",
            file=sys.stderr,
        )
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    """Append URLs to a manifest as text, keeping its comments and layout.

    Refuses invalid URLs and duplicates (across the manifests under manifests/)
    with the same messages as `withcache check`, and writes nothing then. The
    file is created if missing. Commit the change and open a pull request.

    With --mirror NAME the arguments are paths under that mirror (a miss's
    /m/NAME/<path>, or a bare distfile name for `layout: gentoo`), appended to the
    `files:` of the manifest that defines the mirror.

    With --python NAME, the project goes into a python: section's requirements
    (sync then resolves it itself): this is how a project taken on demand moves
    into a manifest.

    example:
      withcache add https://vendor.example/cuda_12.6.3_linux.run
      withcache add --mirror gentoo distfiles/47/foo-1.2.tar.gz
      withcache add -m manifests/nvidia.yaml --sha256 "$(sha256sum < f.run | cut -c1-64)" \\
          https://vendor.example/f.run
      withcache add --python requests
    """
    from withcache import add

    against = args.against or [DEFAULT_MANIFESTS]
    if args.python:
        if args.urls or args.sha256 or args.keep_query:
            raise UsageError("--python takes project names only; add URLs in another call")
        target, names = add.add_python(args.python, against, args.manifest)
        if not args.quiet:
            print(
                f"added {', '.join(names)} to python.requirements in {target}; "
                "next: withcache check, commit, pull request",
                file=sys.stderr,
            )
        return 0
    if not args.urls:
        raise UsageError("add what? give URLs, --mirror NAME PATH..., or --python NAME")
    hashes = [add.normal_sha256(h) for h in args.sha256 or []]
    if hashes and len(hashes) != len(args.urls):
        raise UsageError(f"{len(hashes)} --sha256 for {len(args.urls)} URLs: give one per URL")
    if args.mirror is not None:
        return _add_mirror(args, hashes)
    entries = [
        add.NewEntry(url, hashes[i] if hashes else None, args.keep_query)
        for i, url in enumerate(args.urls)
    ]
    target = args.manifest or DEFAULT_ADD_FILE
    added = add.add(target, entries, against)
    if not args.quiet:
        print(
            f"added {len(added)} entr{'y' if len(added) == 1 else 'ies'} to {target}; "
            "next: withcache check, commit, pull request",
            file=sys.stderr,
        )
    return 0
