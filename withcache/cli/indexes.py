"""users, publish, yank, upload-service: the private indexes (argparse and printing only)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from withcache.cli.common import Subparsers, command, layout
from withcache.fmt import human

# the commands register() adds
COMMANDS = ("publish", "upload-service", "users", "yank")


def register(sub: Subparsers, parent: argparse.ArgumentParser) -> None:
    p = command(sub, parent, "users", cmd_users)
    users = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, text in (
        ("add", "create a user, or replace their password (read from standard input)"),
        ("passwd", "change an existing user's password (read from standard input)"),
    ):
        a = users.add_parser(action, help=text, parents=[parent])
        a.add_argument("name", metavar="NAME")
        a.add_argument(
            "--cost",
            type=int,
            default=None,
            help="bcrypt cost, 4-16 (default 10: nginx hashes on every request it authenticates)",
        )
    a = users.add_parser("remove", help="remove a user", parents=[parent])
    a.add_argument("name", metavar="NAME")
    a = users.add_parser("list", help="every user and the indexes they may use", parents=[parent])
    a.add_argument("--json", action="store_true", help="one JSON object per user")

    p = command(sub, parent, "publish", cmd_publish)
    p.add_argument("--index", required=True, metavar="NAME", help="the index to add the files to")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE", help="wheels and sdists")

    p = command(sub, parent, "yank", cmd_yank)
    p.add_argument("--index", required=True, metavar="NAME")
    p.add_argument("project", metavar="PROJECT")
    p.add_argument("version", metavar="VERSION")
    p.add_argument("--reason", help="shown to installers (PEP 592)")
    p.add_argument("--undo", action="store_true", help="take the yank back")

    p = command(sub, parent, "upload-service", cmd_upload_service)
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--threads", type=int, default=8, help="threads per worker (default 8)")


def cmd_users(args: argparse.Namespace) -> int:
    """Manage the users of the private indexes (passwords under DATA/state/).

    The password is read from standard input (its first line), never from the
    command line. Who may read or write an index is said in the manifests
    (indexes: read/write); a change here takes effect at once, without a reload.

    example:
      printf '%s\\n' "$SECRET" | withcache users add ci
      withcache users list
      withcache users remove ci
    """
    from withcache.indexes import users

    lay = layout(args)
    if args.action in ("add", "passwd"):
        password = users.password_from(sys.stdin.read())
        cost = args.cost if args.cost is not None else users.DEFAULT_COST
        new = users.set_password(lay, args.name, password, cost=cost, create=args.action == "add")
        if not args.quiet:
            print(f"{'added' if new else 'changed the password of'} {args.name}", file=sys.stderr)
    elif args.action == "remove":
        users.remove(lay, args.name)
        if not args.quiet:
            print(f"removed {args.name}", file=sys.stderr)
    else:
        for u in users.listing(lay):
            if args.json:
                import json

                print(json.dumps({"name": u.name, "read": list(u.reads), "write": list(u.writes)}))
            else:
                reads = ", ".join(u.reads) or "-"
                writes = ", ".join(u.writes) or "-"
                print(f"{u.name}\tread: {reads}\twrite: {writes}")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    """Add wheels and sdists on this host to a private index (no HTTP, same checks).

    Each file must be a wheel or a PEP 625 sdist whose filename and metadata agree.
    A file already there with the same bytes is fine; other bytes are refused.
    Exit 1 if any file was refused (the others are still added).

    example:
      withcache publish --index team dist/*
    """
    from withcache.errors import WithcacheError
    from withcache.indexes import accept, model

    lay = layout(args).ensure()
    ix = model.get(lay, args.index)
    failed = 0
    for path in args.files:
        try:
            done = accept.publish_file(lay, ix, path, accept.local_user())
        except WithcacheError as exc:
            print(f"withcache: error: {path}: {exc}", file=sys.stderr)
            failed += 1
            continue
        if not args.quiet:
            state = "added" if done.new else "already there"
            print(f"{done.filename}: {state} ({human(done.size)}) {done.href}")
    return 1 if failed else 0


def cmd_yank(args: argparse.Namespace) -> int:
    """Mark a version of a project yanked in a private index (PEP 592), or take it back.

    Yanked files stay installable by an exact pin (==); resolvers skip them otherwise.

    example:
      withcache yank --index team mytool 1.2.0 --reason "breaks the CLI"
      withcache yank --index team mytool 1.2.0 --undo
    """
    from withcache.indexes import accept, model

    lay = layout(args)
    ix = model.get(lay, args.index)
    changed = accept.yank(
        lay, ix, args.project, args.version, reason=args.reason, undo=args.undo,
        user=accept.local_user(),
    )  # fmt: skip
    if not args.quiet:
        what = "un-yanked" if args.undo else "yanked"
        for name in changed:
            print(f"{what} {name}")
        if not changed:
            print(f"nothing to do: already {what}", file=sys.stderr)
    return 0


def cmd_upload_service(args: argparse.Namespace) -> int:
    """Serve uploads to the private indexes on DATA/run/upload.sock (gunicorn).

    `withcache serve` runs it by itself; run it alone behind a system nginx
    (withcache/deploy/withcache-upload.service). Stops gracefully on SIGTERM.

    example:
      withcache upload-service --data /srv/withcache
    """
    from withcache.upload import service

    service.run(layout(args), workers=args.workers, threads=args.threads)
    return 0
