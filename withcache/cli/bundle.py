"""export and import: offline bundles for sites with no network (argparse and printing)."""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from withcache.cli.common import Subparsers, command, layout, manifests_option
from withcache.errors import UsageError
from withcache.fmt import human

SHOW = 20  # problems listed one by one; the rest are counted


# the commands register() adds
COMMANDS = ("export", "import")


def register(sub: Subparsers, parent: argparse.ArgumentParser) -> None:
    p = command(sub, parent, "export", cmd_export)
    p.add_argument("out", metavar="OUT", help="a directory, a file ending in .tar, or - (stdout)")
    p.add_argument(
        "--since",
        metavar="DATE",
        help="only artifacts fetched since DATE (2026-11-01, 2026-11-01T12:00Z) or an age (7d)",
    )
    manifests_option(p, "only what these manifests list (default: the whole store)")
    p.add_argument(
        "--verify", action="store_true", help="hash every blob on the way out (import always does)"
    )

    p = command(sub, parent, "import", cmd_import)
    p.add_argument("bundle", metavar="BUNDLE", help="a bundle directory, a .tar file, or -")
    p.add_argument("--wait", action="store_true", help="wait for a running sync to finish")


def since_arg(text: str) -> float:
    """An ISO date or time (UTC unless it says otherwise), or an age like 7d."""
    if re.fullmatch(r"[0-9]+[smhdw]", text):
        from withcache.misses import parse_age

        return time.time() - parse_age(text)
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--since: {text!r} is not a date (2026-11-01) or an age (7d)") from None
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()


def cmd_export(args: argparse.Namespace) -> int:
    """Write the store (or part of it) as one offline bundle: a tar or a directory.

    It holds the blobs (each distinct sha256 once), their records, the manifests as
    last synced, the Python index's pages, and CONTENTS: a sha256 for every file
    (`sha256sum -c CONTENTS` checks a directory bundle). Exit 1 if an artifact had
    to be left out (evicted while exporting, or damaged with --verify).

    example:
      withcache export /media/usb/cache-2026-11.tar
      withcache export /media/usb/weekly.tar --since 7d
      withcache export - -m manifests/cuda.yaml | ssh airgap withcache import -
    """
    from withcache import manifest  # imported when the command runs
    from withcache.bundle import export as bundle

    lay = layout(args)
    if not lay.db.exists():
        raise UsageError(f"{lay.root} holds no withcache store (no {lay.db})")
    since = since_arg(args.since) if args.since else None
    if args.manifests:
        select = bundle.Selection.of(manifest.load(args.manifests), since)
    else:
        select = bundle.Selection(since=since)
    say = _say(args.verbose)
    if args.out == "-":
        if sys.stdout.isatty():
            raise UsageError("export -: stdout is a terminal; redirect it to a file or a pipe")
        sys.stdout.flush()
        done = bundle.export(lay, sys.stdout.fileno(), select, verify=args.verify, say=say)
    else:
        done = bundle.export(lay, Path(args.out), select, verify=args.verify, say=say)
    if not args.quiet:
        print(
            f"export: {done.artifacts} artifacts ({human(done.bytes)}, {done.blobs} blobs) "
            f"to {args.out}",
            file=sys.stderr,
        )
    for url, why in done.left_out[:SHOW]:
        print(f"withcache: error: left out {url}: {why}", file=sys.stderr)
    if len(done.left_out) > SHOW:
        print(f"withcache: error: ... and {len(done.left_out) - SHOW} more", file=sys.stderr)
    return 1 if done.left_out else 0


def cmd_import(args: argparse.Namespace) -> int:
    """Import an offline bundle: verify every byte, then place it like a sync would.

    Artifacts already here with the same bytes are skipped, so importing again
    resumes a bundle that was cut off, and a second import changes nothing. A blob
    whose bytes differ from its record is refused and named; the rest is placed.
    The imported store serves the same URLs with the same bytes.

    example:
      withcache import /media/usb/cache-2026-11.tar --data /srv/withcache
      withcache import /media/usb/cache-2026-11/ --data /srv/withcache
    """
    from withcache.bundle import importer as bundle

    lay = layout(args)
    src = sys.stdin.buffer if args.bundle == "-" else Path(args.bundle)
    if isinstance(src, Path) and not src.exists():
        raise UsageError(f"{src}: no such bundle")
    done = bundle.import_bundle(lay, src, wait=args.wait, say=_say(args.verbose))
    if not args.quiet or not done.ok:
        print(
            f"import: {done.placed} placed ({human(done.bytes)}), {done.present} already here, "
            f"{len(done.refused)} refused, {len(done.missing)} missing",
            file=sys.stderr,
        )
    for url in done.kept_local[:SHOW]:
        print(f"withcache: warning: kept this store's own bytes for {url}", file=sys.stderr)
    for page in done.pages_differ[:SHOW]:
        print(f"withcache: warning: {page} differs from the exported page", file=sys.stderr)
    for what, why in done.refused[:SHOW]:
        print(f"withcache: error: refused {what}: {why}", file=sys.stderr)
    if done.cut_off:
        print(f"withcache: error: the bundle is cut off: {done.cut_off}", file=sys.stderr)
    for url in done.missing[:SHOW]:
        print(f"withcache: error: not in the bundle: {url}", file=sys.stderr)
    if len(done.missing) > SHOW:
        print(f"withcache: error: ... and {len(done.missing) - SHOW} more", file=sys.stderr)
    if done.cut_off or done.missing:
        print(
            "withcache: hint: copy the bundle again and re-run the import: "
            "what is already placed is skipped",
            file=sys.stderr,
        )
    return 0 if done.ok else 1


def _say(verbose: bool) -> Callable[[str], None]:
    def say(msg: str) -> None:
        if verbose:
            print(msg, file=sys.stderr)

    return say
