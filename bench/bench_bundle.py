#!/usr/bin/env python3
"""bundle: export + import of a store against `tar cf` + `tar xf` of the same files.

A store of --size GiB (default 1, --quick 0.25; the issue's figure is --size 10, which
needs about 3x that in free disk and ~6 minutes a round here, so `make bench` runs less)
in a realistic mix: eight big files and 64 small ones. Each round, interleaved and with
dirty pages flushed (untimed) before every step:

- baseline: `tar cf B.tar -C DATA/www b` then `tar xf B.tar -C OUT`;
- withcache: `withcache export B.tar` then `withcache import B.tar --data NEW`, which
  hashes every byte, fsyncs every file and records every artifact (the verify pass is
  the expected cost; tar xf neither hashes nor fsyncs).

Target: the withcache pair at least 0.7x the tar pair's speed. Outputs are removed after
each step, so the peak disk use is about 3x the size.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import common as c

from withcache import keys, store
from withcache.layout import Layout

BIG = 8
SMALL = 64


def populate(data: Path, size: int) -> Layout:
    """Blobs written in place and recorded in one batch (a bench seeds; sync would fetch)."""
    layout = Layout(data).ensure()
    small = min(c.MiB, size // (4 * SMALL))
    big = (size - SMALL * small) // BIG
    rows = []
    for i in range(BIG + SMALL):
        n = big if i < BIG else small
        url = f"https://vendor.example/{'iso' if i < BIG else 'pkg'}/file-{i}.bin"
        key = keys.normalize(url)
        path = layout.www / keys.blob_relpath(key)
        digest = c.make_file(path, n, seed=i)
        rows.append(store.Artifact(key, url, keys.name(key), n, digest, time.time()))
    c.seed_records(layout.db, rows)
    return layout


def main() -> int:
    args = c.parse_args(
        "bundle",
        extra=lambda p: p.add_argument(
            "--size", type=float, metavar="GIB", help="store size in GiB (default 1; quick 0.25)"
        ),
    )
    gib = args.size if args.size else (0.25 if args.quick else 1.0)
    size = int(gib * c.GiB)
    runs = args.runs or (2 if args.quick else 3)
    table = c.Table("bundle", args.json)
    with c.tmpdir("bench-bundle") as tmp:
        free = shutil.disk_usage(tmp).free
        if free < 3.2 * size:
            why = f"needs ~{3.2 * gib:g} GiB free, {free / c.GiB:.0f} GiB here"
            table.skip(f"{gib:g} GiB", why)
            return table.finish()
        c.log(f"{gib:g} GiB store: populating")
        src = populate(tmp / "src", size)
        bundle, out, new = tmp / "b.tar", tmp / "out", tmp / "new"
        tar: list[float] = []
        ours: list[float] = []
        parts: list[tuple[float, float, float, float]] = []

        def timed(argv: list[str]) -> float:
            c.settle()
            t0 = time.perf_counter()
            c.run(argv, timeout=3600)
            return time.perf_counter() - t0

        for r in range(runs):
            c.log(f"round {r + 1}/{runs}")
            out.mkdir()
            cf = timed(["tar", "cf", str(bundle), "-C", str(src.www), "b"])
            xf = timed(["tar", "xf", str(bundle), "-C", str(out)])
            shutil.rmtree(out)
            bundle.unlink()
            ex = timed([*c.WITHCACHE, "export", "-q", "--data", str(src.root), str(bundle)])
            im = timed([*c.WITHCACHE, "import", "-q", "--data", str(new), str(bundle)])
            shutil.rmtree(new)
            bundle.unlink()
            tar.append(size / (cf + xf) / 1e6)
            ours.append(size / (ex + im) / 1e6)
            parts.append((cf, xf, ex, im))
        med = [sorted(p[i] for p in parts)[len(parts) // 2] for i in range(4)]
        label = f"{gib:g} GiB, {BIG} big + {SMALL} small files"
        table.add(
            f"{label}: tar cf + tar xf",
            c.Stats(tar),
            "MB/s",
            baseline=True,
            note=f"cf {med[0]:.1f}s + xf {med[1]:.1f}s",
        )
        table.add(
            f"{label}: withcache export + import",
            c.Stats(ours),
            "MB/s",
            paired=True,
            target=0.7,
            note=f"export {med[2]:.1f}s + import {med[3]:.1f}s (hash, fsync, record)",
        )
    return table.finish()


if __name__ == "__main__":
    raise SystemExit(main())
