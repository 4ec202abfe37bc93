#!/usr/bin/env python3
"""budget: the eviction scan over 100,000 artifacts (target: at most 1 s).

The state DB is filled directly: 100,000 artifacts, half of them evictable (source
`auto`, `ondemand`), one in three with hits. The scan is what every eviction pass does
before it unlinks anything: the store's total bytes, the evictable candidates least
recently used first (one SQL query joining the hits), minus the keys the manifests list
(10,000 here), and the choice of victims for a budget 10% under the total. Baseline,
same rows, same run: `SELECT key, size FROM artifacts` into a list (the floor of reading
the table once).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import common as c

from withcache import budget, keys, store
from withcache.layout import Layout

COUNT = 100_000


def populate(data: Path, count: int) -> tuple[Layout, set[str]]:
    layout = Layout(data)
    now = time.time()
    rows, hits, listed = [], [], set()
    sources = ("manifest", "auto", "python", "ondemand")
    for i in range(count):
        url = f"https://vendor{i % 37}.example/pkg/{i // 100}/tool-{i}.tar.gz"
        key = keys.normalize(url)
        src = sources[i % 4]
        rows.append(
            store.Artifact(
                key, url, keys.name(key), 1_000_000 + i, f"{i:064x}", now - i, None, None, src
            )
        )
        if i % 3 == 0:
            hits.append((key, i % 50 + 1, 1_000_000, now - (i * 7919) % count))
        if src == "auto" and i % 5 == 1:
            listed.add(key)  # auto-filled, then committed to a manifest
    c.seed_records(layout.db, rows, hits)
    return layout, listed


def scan(layout: Layout, listed: set[str]) -> int:
    with contextlib.closing(store.connect(layout.db)) as conn:
        stored = budget.stored_bytes(conn)
        cands = budget.candidates(conn, listed)
    lim = budget.Limits(budget=int(stored * 0.9))
    choice = budget.choose(cands, stored=stored, free=1 << 50, need=0, lim=lim)
    return len(choice.victims)


def floor(layout: Layout) -> int:
    with contextlib.closing(store.connect(layout.db)) as conn:
        return len(list(conn.execute("SELECT key, size FROM artifacts")))


def main() -> int:
    args = c.parse_args("budget")
    runs = args.runs or (5 if args.quick else 9)
    table = c.Table("budget", args.json)
    with c.tmpdir("bench-budget") as tmp:
        c.log(f"{COUNT:,} artifacts: populating")
        layout, listed = populate(tmp / "d", COUNT)
        victims = scan(layout, listed)  # warm the page cache once, untimed
        base: list[float] = []
        ours: list[float] = []
        for _ in range(runs):
            base.append(c.time_runs(lambda: floor(layout), 1).median)
            ours.append(c.time_runs(lambda: scan(layout, listed), 1).median)
        table.add(f"{COUNT:,} artifacts: SELECT key, size", c.Stats(base), "s", baseline=True)
        table.add(
            f"{COUNT:,} artifacts: eviction scan",
            c.Stats(ours),
            "s",
            paired=True,
            limit=1.0,
            note=f"{COUNT // 2:,} evictable, {len(listed):,} of them listed; {victims:,} chosen",
        )
    return table.finish()


if __name__ == "__main__":
    raise SystemExit(main())
