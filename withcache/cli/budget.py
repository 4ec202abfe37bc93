"""du and metrics: what the store holds, for people and for Prometheus."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from withcache.cli.common import Subparsers, command, layout, manifest_paths, manifests_option
from withcache.fmt import human
from withcache.layout import Layout

if TYPE_CHECKING:
    from withcache import budget
    from withcache.listed import Listed


# the commands register() adds
COMMANDS = ("du", "metrics")


def register(sub: Subparsers, parent: argparse.ArgumentParser) -> None:
    p = command(sub, parent, "du", cmd_du)
    manifests_option(p, "manifests: their store: section and what they list")
    p.add_argument("--json", action="store_true", help="one JSON object")

    p = command(sub, parent, "metrics", cmd_metrics)
    manifests_option(p, "manifests: their store: section and what they list")
    p.add_argument(
        "--textfile-dir",
        type=Path,
        metavar="DIR",
        help="also write withcache.prom into node_exporter's textfile-collector DIR",
    )
    p.add_argument("--print", action="store_true", help="print the exposition too")


def _limits(args: argparse.Namespace, lay: Layout) -> tuple[budget.Limits, Listed]:
    from withcache import budget  # imported when a command runs: start-up stays quick
    from withcache.listed import Listed

    listed = Listed(manifest_paths(args.manifests))
    if listed.error:
        print(f"withcache: warning: manifests not read: {listed.error}", file=sys.stderr)
    return budget.limits(lay, listed.store), listed


def cmd_du(args: argparse.Namespace) -> int:
    """Show the store's bytes by source, the part the budget may evict, and free space.

    Evictable: artifacts no manifest lists (auto-filled, fetched on demand). Listed,
    Python-index, uploaded and mirrored artifacts are never evicted.

    example:
      withcache du --data /srv/withcache
      withcache du --json | jq .evictable
    """
    from withcache import budget

    lay = layout(args)
    lim, listed = _limits(args, lay)
    use = budget.usage(lay, lim, listed())
    if args.json:
        print(json.dumps(_as_json(use), indent=1))
        return 0
    print(f"{'SOURCE':<12} {'ARTIFACTS':>9} {'BYTES':>11} {'EVICTABLE':>11}")
    for s in use.sources:
        print(f"{s.source:<12} {s.artifacts:>9,} {human(s.bytes):>11} {human(s.evictable):>11}")
    print(f"{'total':<12} {use.artifacts:>9,} {human(use.total):>11} {human(use.evictable):>11}")
    print(f"filesystem: {human(use.disk.size)}, {human(use.disk.free)} free")
    if lim.budget is not None:
        over = use.total - lim.budget
        state = f"{human(over)} over" if over > 0 else f"{human(-over)} left"
        print(f"budget: {human(lim.budget)} ({state})")
    if lim.min_free:
        print(f"min_free: {human(lim.min_free)}")
    print(f"max_size: {human(lim.max_size or budget.DEFAULT_MAX_SIZE)} per download")
    if use.evictions:
        print(f"evicted so far: {use.evictions:,} artifacts, {human(use.evicted_bytes)}")
    return 0


def _as_json(use: budget.Usage) -> dict[str, object]:
    from withcache.budget import DEFAULT_MAX_SIZE

    return {
        "sources": [s.__dict__ for s in use.sources],
        "artifacts": use.artifacts,
        "bytes": use.total,
        "evictable": use.evictable,
        "filesystem": {"size": use.disk.size, "free": use.disk.free},
        "budget": use.lim.budget,
        "min_free": use.lim.min_free,
        "max_size": use.lim.max_size or DEFAULT_MAX_SIZE,
        "evictions": use.evictions,
        "evicted_bytes": use.evicted_bytes,
    }


def cmd_metrics(args: argparse.Namespace) -> int:
    """Write www/metrics (served at /metrics) now; the watcher and sync also do.

    Prometheus text format. For node_exporter's textfile collector pass its
    directory, or link it: ln -s DATA/www/metrics DIR/withcache.prom

    example:
      withcache metrics --data /srv/withcache --print
      withcache metrics --textfile-dir /var/lib/prometheus/node-exporter
    """
    from withcache import metrics

    lay = layout(args)
    lim, listed = _limits(args, lay)
    lay.ensure()
    text = metrics.write(lay, lim, listed(), args.textfile_dir)
    if args.print:
        sys.stdout.write(text)
    return 0
