"""watch: follow nginx's access log into the state DB (and auto-fill misses)."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from withcache.cli.common import DEFAULT_MANIFESTS, Subparsers, command, layout, manifests_option
from withcache.errors import ManifestError, UsageError
from withcache.fmt import iso
from withcache.layout import Layout

if TYPE_CHECKING:
    from withcache.budget import Limits
    from withcache.listed import Listed
    from withcache.mirrors.config import Mirror
    from withcache.ondemand import OnDemand
    from withcache.watch import Tally, Watcher


# the commands register() adds
COMMANDS = ("watch",)


def register(sub: Subparsers, parent: argparse.ArgumentParser) -> None:
    p = command(sub, parent, "watch", cmd_watch)
    p.add_argument(
        "--log",
        type=Path,
        help="access log to follow (default: DATA/log/access.log, the one `serve` writes)",
    )
    p.add_argument("--once", action="store_true", help="read up to the log's end, then exit")
    p.add_argument(
        "--status", action="store_true", help="show where the watcher is in the log, then exit"
    )
    p.add_argument("--json", action="store_true", help="with --status: as JSON")
    p.add_argument(
        "--auto",
        action="store_true",
        help="fetch misses whose host is in a manifest's auto.allow_hosts, and path misses "
        "of mirrors with auto: true (off by default)",
    )
    manifests_option(
        p,
        "manifests holding auto.allow_hosts and mirrors (--auto) and python.on_demand "
        "(read at start)",
    )
    p.add_argument(
        "--auto-jobs", type=int, default=2, help="with --auto: parallel downloads (default 2)"
    )
    p.add_argument(
        "--on-demand-rate",
        type=int,
        default=30,
        metavar="N",
        help="python.on_demand: at most N projects a minute reach the upstream (default 30)",
    )
    p.add_argument(
        "--metrics-every",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="rewrite www/metrics at most this often (0: only at exit; default 15)",
    )
    p.add_argument(
        "--textfile-dir",
        type=Path,
        metavar="DIR",
        help="also write withcache.prom into node_exporter's textfile-collector DIR",
    )
    p.add_argument(
        "--index-every",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="re-render index.html at most this often while counts change (0: never; default 60)",
    )


def cmd_watch(args: argparse.Namespace) -> int:
    """Follow nginx's access log: record misses and hits in the state DB.

    A 404 under /b/ (GET or HEAD) is a miss of the decoded origin URL, a 404 under
    /simple/<project>/ a missing Python project, a 404 or a fall-through under
    /m/<mirror>/ a miss of that mirror path, a GET answered 200/206 a hit. The
    log position is committed with the counts, so after a crash or `kill -9` the
    watcher continues exactly where it stopped. It follows rotation by rename and by
    copytruncate, waits for a log that does not exist yet, and stops cleanly on
    SIGTERM or Ctrl-C. Run it as a service (withcache/deploy/withcache-watch.service).

    When a manifest's python: section sets on_demand, a missing project that its globs
    admit is taken from the upstream (resolved, fetched verified, published), and with
    python.refresh the projects taken are revalidated that often.

    example:
      withcache watch --data /srv/withcache
      withcache watch --data /srv/withcache --log /var/log/nginx/withcache.json.log
      withcache watch --status            # how far behind the log's end is it?
    """
    from withcache import budget, metrics, watch  # imported when the watcher runs
    from withcache.listed import Listed

    lay = layout(args)
    log = args.log or lay.access_log
    if args.status:
        return _print_status(lay, log, as_json=args.json)
    verbose, quiet = args.verbose, args.quiet

    def warn(msg: str) -> None:
        print(f"withcache: warning: {msg}", file=sys.stderr, flush=True)

    def say(msg: str) -> None:
        if not quiet:
            print(f"withcache: {msg}", file=sys.stderr, flush=True)

    if args.on_demand_rate < 1:
        raise UsageError("--on-demand-rate must be at least 1")
    paths = args.manifests or [DEFAULT_MANIFESTS]
    listed = Listed(paths)  # the store: section, and what eviction must never take
    limits = budget.limits(lay, listed.store)
    auto = None
    mirror_auto = None
    if args.auto:
        from withcache import role
        from withcache.autofill import AutoFill
        from withcache.mirrors.autofill import MirrorFill

        role.refuse_writes(lay, "auto-fill")
        hosts, mirrors = _auto_config(paths)
        auto_mirrors = [m for m in mirrors if m.auto]
        if not hosts and not auto_mirrors:
            raise UsageError(
                "--auto: no manifest sets auto.allow_hosts or a mirror's auto: true; "
                "nothing may be fetched"
            )
        jobs = max(1, args.auto_jobs)
        if hosts:
            auto = AutoFill(lay, hosts, jobs=jobs, say=say, limits=limits, listed=listed)
            say(f"auto-fill on for {', '.join(sorted(hosts))}")
        if auto_mirrors:
            mirror_auto = MirrorFill(
                lay, auto_mirrors, jobs=jobs, say=say, limits=limits, listed=listed
            )
            say(f"auto-fill on for mirrors {', '.join(m.name for m in auto_mirrors)}")
    demand = _on_demand(
        lay, paths, args.on_demand_rate, args.index_every, say, warn, (limits, listed)
    )
    upkeep: list[Callable[[bool], None]] = [
        metrics.Writer(
            lay, limits, listed, every=args.metrics_every, textfile_dir=args.textfile_dir
        ),
        budget.Keeper(lay, limits, listed, say=say),
    ]

    def committed(t: Tally) -> None:
        if auto is not None:
            auto.offer(k for k, m in t.traffic.misses.items() if m.kind == "url")
        if mirror_auto is not None:
            mirror_auto.offer(k for k, m in t.traffic.misses.items() if m.kind == "mirror")
        if demand is not None:
            demand.offer(m.url for m in t.traffic.misses.values() if m.kind == "project")
        if verbose:
            say(
                f"read {t.lines} lines: {t.hits} hits, {t.misses + t.project_misses} misses, "
                f"{t.invalid} invalid, {t.garbage} garbage"
            )

    w = watch.Watcher(
        lay, log, warn=warn, on_commit=committed, index_every=args.index_every, upkeep=upkeep
    )
    say(f"watching {log}" + (" (until its end)" if args.once else ""))
    try:
        with _stop_on_signals(w):
            total = w.run(once=args.once)
    finally:
        if auto is not None:
            auto.close()
        if mirror_auto is not None:
            mirror_auto.close()
        if demand is not None:
            demand.close(drain=args.once)
    say(
        f"watch: {total.lines} lines read: {total.hits} hits, {total.misses} misses, "
        f"{total.project_misses} missing projects, {total.invalid} invalid, "
        f"{total.garbage} garbage"
    )
    return 0


@contextlib.contextmanager
def _stop_on_signals(w: Watcher) -> Iterator[None]:
    """SIGTERM and SIGINT ask the watcher to commit what it read and return."""

    def handler(_sig: int, _frame: FrameType | None) -> None:
        w.stop()

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _on_demand(
    lay: Layout,
    paths: list[Path],
    per_minute: int,
    index_every: float,
    say: Callable[[str], None],
    warn: Callable[[str], None],
    room: tuple[Limits, Listed],
) -> OnDemand | None:
    """The on-demand worker, when a manifest's python: section sets on_demand. Broken
    manifests turn it off (with a warning) rather than stop the watcher."""
    existing = [p for p in paths if p.exists()]
    if not existing:
        return None
    from withcache import role

    if role.not_own_tree(lay) is not None:
        return None  # a replica's or an edge's pages come from the center
    try:
        from withcache import manifest

        configs = [c for c in manifest.load(existing).python if c.on_demand]
    except ManifestError as exc:
        warn(f"manifests have problems ({len(exc.problems)}); on-demand Python projects off")
        return None
    if not configs:
        return None
    from withcache import budget, fetch
    from withcache.ondemand import OnDemand
    from withcache.pyindex import take

    # Taken without review, like an auto-fill: the store's budget may refuse its files.
    limits, listed = room
    policy = budget.policy_for(
        fetch.Policy(attempts=2, backoff=0.5), limits, lay, listed, binds=True
    )
    settings = take.Settings(lay.state / "uv-cache", policy=policy)
    worker = OnDemand(
        lay, configs, per_minute=per_minute, say=say, index_every=index_every, settings=settings
    )
    worker.start()
    globs = sorted({g for c in configs for g in c.on_demand})
    say(f"on demand: Python projects matching {', '.join(globs)}, at most {per_minute}/min")
    worker.offer_open_misses()
    return worker


def _auto_config(paths: list[Path]) -> tuple[list[str], tuple[Mirror, ...]]:
    """auto.allow_hosts and the mirrors, from the manifests that exist."""
    existing = [p for p in paths if p.exists()]
    if not existing:
        return [], ()
    from withcache import manifest

    m = manifest.load(existing)
    return list(m.allow_hosts), m.mirrors


def _print_status(lay: Layout, log: Path, *, as_json: bool) -> int:
    from withcache import watch

    st = watch.status(lay, log)
    ck = st.checkpoint
    if as_json:
        doc = {
            "log": st.log,
            "inode": ck.inode if ck else None,
            "offset": ck.offset if ck else None,
            "updated": iso(st.updated) if st.updated else None,
            "size": st.size,
            "behind": st.behind,
            "counters": st.counters,
        }
        print(json.dumps(doc, indent=1))
        return 0
    where = f"byte {ck.offset:,} of inode {ck.inode}" if ck else "nothing read yet"
    print(f"log: {st.log} ({where})")
    if st.size is None:
        print("the log does not exist (yet)")
    elif st.behind is not None:
        print(f"behind the log's end by {st.behind:,} bytes")
    if st.updated:
        print(f"last commit: {iso(st.updated)}")
    if st.counters:
        print("totals: " + ", ".join(f"{k} {v:,}" for k, v in sorted(st.counters.items())))
    return 0
