#!/usr/bin/env python3
"""index: time `withcache.index.render()` for 1,000 / 10,000 / 100,000 artifacts.

The state DB's artifacts table is filled directly (one bulk insert; one artifact in ten
has hits), then render(Layout(d)) writes www/index.html and www/catalog.json. Baseline,
same rows, same run: the least work that yields a catalog — SELECT every row, json.dumps
it, write the file atomically. The ratio says how far the HTML + catalog rendering is
from that floor. --quick skips 100,000 (a full run measures it).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import common as c

from withcache import index, keys, store
from withcache.layout import Layout

SIZES = (1_000, 10_000, 100_000)


def populate(data: Path, count: int) -> Layout:
    """A data dir whose state DB lists `count` artifacts (no blobs needed to render)."""
    layout = Layout(data)
    now = time.time()
    rows, hits = [], []
    for i in range(count):
        url = f"https://vendor{i % 37}.example/pkg/{i // 100}/tool-{i}.tar.gz"
        key = keys.normalize(url)
        rows.append(store.Artifact(key, url, keys.name(key), 1_000_000 + i, f"{i:064x}", now - i))
        if i % 10 == 0:
            hits.append((key, i % 50 + 1, (i % 50 + 1) * 1_000_000, now - i / 2))
    c.seed_records(layout.db, rows, hits)
    return layout


def floor_catalog(layout: Layout) -> None:
    """The baseline: rows out of SQLite, json.dumps, atomic write."""
    conn = store.connect(layout.db)
    try:
        rows = [dict(r) for r in conn.execute("SELECT * FROM artifacts")]
    finally:
        conn.close()
    out = layout.www / "floor.json"
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows))
    os.replace(tmp, out)


def main() -> int:
    args = c.parse_args("index")
    runs = args.runs or 5
    sizes = SIZES[:2] if args.quick else SIZES
    table = c.Table("index", args.json)
    with c.tmpdir("bench-index") as tmp:
        for n in sizes:
            c.log(f"{n:,} artifacts: populating, then {runs} rounds")
            layout = populate(tmp / f"d{n}", n)
            layout.www.mkdir(parents=True, exist_ok=True)
            floor: list[float] = []
            render: list[float] = []
            for _ in range(runs):  # interleaved; milliseconds
                floor.append(1e3 * c.time_runs(lambda lay=layout: floor_catalog(lay), 1).median)
                render.append(1e3 * c.time_runs(lambda lay=layout: index.render(lay), 1).median)
            html = (layout.www / "index.html").stat().st_size
            label = f"{n:,} artifacts"
            table.add(f"{label}: SELECT + json.dumps + write", c.Stats(floor), "ms", baseline=True)
            r = table.add(f"{label}: index.render()", c.Stats(render), "ms", paired=True)
            per = (r.median or 0) / n * 1e3
            r.note = f"{html / 1e6:.1f} MB of HTML, {per:.0f} µs per artifact"
        if args.quick:
            table.skip("100,000 artifacts", "full run only")
    return table.finish()


if __name__ == "__main__":
    raise SystemExit(main())
