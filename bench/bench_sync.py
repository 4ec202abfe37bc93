#!/usr/bin/env python3
"""sync: `withcache sync` against curl, sha256sum and the PyPI peer's fill, same origin.

The origin is a minimal nginx on loopback (several GB/s, never the bottleneck).
  - 1 GiB: `curl -o FILE` (baseline) vs `withcache sync` of the same URL into an empty
    data dir (download + sha256 + fsync + rename + index), vs hashing alone
    (`sha256sum`; `openssl dgst -sha256` for the CPU's SHA-NI speed), vs writing alone
    (`dd` with fsync), vs withcache-server 0.13.3's fill through its API. Target: sync
    >= 0.9x of the floor, the slowest of the stages measured alone in the same round
    (curl's download, `openssl dgst`, `dd` with fsync): sync cannot beat its slowest
    stage.
  - 200 x 1 MiB: one `curl` sequential (-K list) vs `withcache sync -j 1`; `curl -Z
    --parallel-max 4` vs `withcache sync -j 4` (target >= 0.5x, every file fsynced and
    recorded).
  - no-op: `withcache sync` over a 10,000-entry manifest whose artifacts are all present
    (target < 1 s), vs the same over 1 entry (the fixed cost), and with --no-index.
Notes give each case's median CPU time (user + sys), which a busy machine disturbs less
than wall time. Rounds interleave the cases, and each ratio is the median of per-round ratios; dirty
pages are flushed (untimed) before every timed case, so no case pays for another's
writeback. --quick keeps the headline pairs only (1 GiB curl vs sync, 3 rounds; the
4-job pair over 50 files; the no-op) and skips the rest with a message.
"""

from __future__ import annotations

import hashlib
import resource
import shutil
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import common as c

JOBS = 4
SMALL = 200
NOOP = 10_000
NOTES = {
    "sha256sum": "coreutils: no SHA-NI",
    "openssl dgst -sha256": "SHA-NI: the CPU's hashing speed",
    "dd write + fsync (disk)": "writing 1 GiB to this disk, no network",
}


Case = Callable[[], tuple[float, float | None]]


def rounds(cases: dict[str, Case], runs: int) -> dict[str, tuple[c.Stats, c.Stats | None]]:
    """Run every case once per round, `runs` rounds: (wall seconds, CPU seconds or None).
    Each case cleans up and flushes before it starts its clock (see `timed`)."""
    wall: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, fn in cases.items():
            w, u = fn()
            wall[name].append(w)
            if u is not None:
                cpu[name].append(u)
    return {n: (c.Stats(wall[n]), c.Stats(cpu[n]) if cpu[n] else None) for n in cases}


def cpu_seconds(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def timed(argv: list[str], before: Callable[[], object] | None = None) -> Case:
    """A case that runs `before()` and flushes dirty pages (both untimed), then runs the
    command: its wall time, and its CPU time (user + sys, children included)."""

    def case() -> tuple[float, float]:
        if before:
            before()
        c.settle()
        u0, t0 = cpu_seconds(resource.RUSAGE_CHILDREN), time.perf_counter()
        c.run(argv, timeout=600)
        return time.perf_counter() - t0, cpu_seconds(resource.RUSAGE_CHILDREN) - u0

    return case


def rm(*paths: Path) -> Callable[[], None]:
    """A cleanup step: remove these files or directories (absent ones are fine)."""

    def clean() -> None:
        for p in paths:
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)

    return clean


def sync_argv(data: Path, manifest: Path, *extra: str) -> list[str]:
    return [*c.WITHCACHE, "sync", "-q", "--data", str(data), "-m", str(manifest), *extra]


def big_cases(table: c.Table, tmp: Path, origin: str, runs: int, quick: bool) -> None:
    url = f"{origin}/big.bin"
    manifest = tmp / "big.yaml"
    manifest.write_text(f"artifacts:\n  - {url}\n")
    out, data = tmp / "curl-big.bin", tmp / "data-big"
    cases: dict[str, Case] = {
        "1 GiB: curl -o": timed(["curl", "-sSf", "-o", str(out), url], rm(out)),
        "1 GiB: withcache sync": timed(sync_argv(data, manifest), rm(data)),
    }
    if not quick:
        # hashing alone, over curl's file (in the page cache)
        cases["1 GiB: sha256sum"] = timed(["sha256sum", str(out)])
        cases["1 GiB: openssl dgst -sha256"] = timed(["openssl", "dgst", "-sha256", str(out)])
        cases["1 GiB: dd write + fsync (disk)"] = timed(
            ["dd", "if=/dev/zero", f"of={tmp / 'dd.bin'}", "bs=4M", "count=256", "conv=fsync"],
            rm(tmp / "dd.bin"),
        )
    venv, why = (None, "full run only") if quick else c.ensure_peer()
    with ExitStack() as stack:
        if venv is not None:
            peer = stack.enter_context(c.peer_server(venv, tmp / "peer"))
            cases["1 GiB: withcache-server 0.13.3 fill"] = lambda: (peer.fill(url, "big"), None)
        c.log(f"1 GiB x{runs} rounds: {', '.join(cases)}")
        stats = rounds(cases, runs)
    for n, (name, (wall, cpu)) in enumerate(stats.items()):
        notes = [f"CPU {cpu.median:.2f} s"] if cpu else []
        notes += [NOTES[k] for k in NOTES if name.endswith(k)]
        note = "; ".join(notes)
        table.add(name, wall, "s", baseline=n == 0, paired=True, note=note)
    if venv is None:
        table.skip("1 GiB: withcache-server 0.13.3 fill", why)
    if quick:
        table.skip("1 GiB: sha256sum, openssl, dd", "full run only")
        return
    # What sync does is download *and* verify: compare it with curl followed by a hash,
    # summed round by round from the rows above (nothing is run again).
    sync_wall = stats["1 GiB: withcache sync"][0]
    for tool in ("sha256sum", "openssl dgst -sha256"):
        curl_wall, hash_wall = stats["1 GiB: curl -o"][0], stats[f"1 GiB: {tool}"][0]
        summed = [a + b for a, b in zip(curl_wall.samples, hash_wall.samples, strict=True)]
        base = f"1 GiB: curl -o, then {tool}"
        table.add(base, c.Stats(summed), "s", baseline=True, note="sum of the rows above")
        table.add(
            f"1 GiB: withcache sync (vs curl + {tool.split()[0]})", sync_wall, "s", paired=True
        )
    stages = [stats[f"1 GiB: {k}"][0].samples for k in ("curl -o", *list(NOTES)[1:])]
    floor = [max(round_) for round_ in zip(*stages, strict=True)]
    table.add(
        "1 GiB: floor, the slowest stage alone",
        c.Stats(floor),
        "s",
        baseline=True,
        note="per round, the slowest of curl -o, openssl dgst, dd + fsync",
    )
    table.add("1 GiB: withcache sync (vs the floor)", sync_wall, "s", paired=True, target=0.9)
    rm(out, data, tmp / "peer", tmp / "dd.bin")()


def small_cases(table: c.Table, tmp: Path, origin: str, runs: int, quick: bool) -> None:
    count = SMALL // 4 if quick else SMALL
    urls = [f"{origin}/small/s{i:03d}.bin" for i in range(count)]
    manifest = tmp / "small.yaml"
    manifest.write_text("artifacts:\n" + "".join(f"  - {u}\n" for u in urls))
    outdir, data = tmp / "curl-small", tmp / "data-small"
    listing = tmp / "curl-small.cfg"
    listing.write_text(
        "".join(f'url = "{u}"\noutput = "{outdir}/{i}"\n' for i, u in enumerate(urls))
    )

    def fresh_outdir() -> None:
        rm(outdir)()
        outdir.mkdir()

    curl = ["curl", "-sSf", "-K", str(listing)]
    pairs = [(f"{JOBS} jobs", ["-Z", "--parallel-max", str(JOBS)], ["-j", str(JOBS)])]
    if not quick:
        pairs.insert(0, ("sequential", [], ["-j", "1"]))
    cases: dict[str, Case] = {}
    for label, curl_opts, sync_opts in pairs:
        cases[f"{count} x 1 MiB, {label}: curl {' '.join(curl_opts)}".rstrip()] = timed(
            [*curl, *curl_opts], fresh_outdir
        )
        cases[f"{count} x 1 MiB, {label}: withcache sync {' '.join(sync_opts)}"] = timed(
            sync_argv(data, manifest, *sync_opts), rm(data)
        )
    c.log(f"{count} x 1 MiB x{runs} rounds")
    stats = rounds(cases, runs)
    for n, (name, (wall, cpu)) in enumerate(stats.items()):
        note = f"CPU {cpu.median:.2f} s" if cpu else ""
        target = 0.5 if name.endswith(f"withcache sync -j {JOBS}") else None
        table.add(name, wall, "s", baseline=n % 2 == 0, paired=n % 2 == 1, target=target, note=note)
    if quick:
        table.skip(f"{SMALL} x 1 MiB (sequential, 4 jobs)", "full run only")
    rm(outdir, data)()


def populate(data: Path, manifest: Path, count: int) -> None:
    """A data dir holding `count` tiny verified artifacts and their manifest, written
    directly (blob files + state rows, as sync leaves them), in seconds rather than the
    minutes a first sync of 10,000 files takes. The first sync over it must fetch nothing."""
    from withcache import keys, store
    from withcache.layout import Layout

    layout = Layout(data)
    rows, lines = [], ["artifacts:"]
    now = time.time()
    for i in range(count):
        url = f"http://127.0.0.1:9/noop/f{i:05d}.txt"  # never contacted: a no-op fetches nothing
        body = b"%d\n" % i
        key = keys.normalize(url)
        blob = layout.www / keys.blob_relpath(key)
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(body)
        a = store.Artifact(
            key, url, keys.name(key), len(body), hashlib.sha256(body).hexdigest(), now
        )
        rows.append(a)
        lines.append(f"  - {url}")
    c.seed_records(layout.db, rows)
    manifest.write_text("\n".join(lines) + "\n")


def noop_cases(table: c.Table, tmp: Path, runs: int, quick: bool) -> None:
    data, manifest = tmp / "data-noop", tmp / "noop.yaml"
    one_data, one = tmp / "data-noop1", tmp / "noop1.yaml"
    c.log(f"populating a data dir with {NOOP:,} artifacts")
    populate(data, manifest, NOOP)
    populate(one_data, one, 1)
    for d, m in ((data, manifest), (one_data, one)):
        out = c.run([*c.WITHCACHE, "sync", "--data", str(d), "-m", str(m)], timeout=300)
        if " 0 fetched" not in out.stdout + out.stderr:
            raise RuntimeError(f"the pre-populated data dir is not a no-op:\n{out.stderr}")
    cases: dict[str, Case] = {
        "no-op sync, 1 entry": timed(sync_argv(one_data, one)),
        f"no-op sync, {NOOP:,} entries": timed(sync_argv(data, manifest)),
    }
    if not quick:
        cases[f"no-op sync, {NOOP:,} entries, --no-index"] = timed(
            sync_argv(data, manifest, "--no-index")
        )
    c.log(f"no-op sync x{runs} rounds")
    stats = rounds(cases, runs)
    for n, (name, (wall, cpu)) in enumerate(stats.items()):
        note = f"CPU {cpu.median:.2f} s" if cpu else ""
        limit = 1.0 if n == 1 else None
        table.add(name, wall, "s", baseline=n == 0, paired=n > 0, limit=limit, note=note)


def main() -> int:
    args = c.parse_args("sync")
    runs = args.runs or 5
    big_runs = args.runs or (3 if args.quick else 5)
    table = c.Table("sync", args.json)
    missing = [t for t in ("curl", "sha256sum", "openssl") if not c.have(t)]
    if missing:
        print(f"sync bench: {', '.join(missing)} not installed; cannot run its baselines")
        return 0
    with c.tmpdir("bench-sync") as tmp:
        origin_dir = tmp / "origin"
        c.log("writing the origin's files (1 GiB + 200 x 1 MiB)")
        c.make_file(origin_dir / "big.bin", c.GiB)
        for i in range(SMALL):
            c.make_file(origin_dir / "small" / f"s{i:03d}.bin", c.MiB, seed=i + 1)
        (origin_dir / "small").chmod(0o755)
        with c.static_origin(origin_dir) as origin:
            big_cases(table, tmp, origin, big_runs, args.quick)
            small_cases(table, tmp, origin, runs, args.quick)
        noop_cases(table, tmp, runs, args.quick)
    return table.finish()


if __name__ == "__main__":
    raise SystemExit(main())
