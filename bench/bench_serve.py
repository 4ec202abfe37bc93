#!/usr/bin/env python3
"""serve: withcache's nginx config against nginx's own ceiling and the PyPI peer.

The same two files (1 GiB and 4 KiB) are synced into a data dir, then served at once by
  - a minimal static nginx config over that data dir's www/ (the baseline: nginx's ceiling),
  - `withcache serve` (our rendered config, JSON access log, token map, try_files),
  - `withcache-server` 0.13.3 from PyPI (seeded through its API from the same origin).
Cases: a 1 GiB GET with curl (MB/s), 4 KiB GETs with wrk (req/s), HEAD probes with
`ab -k -i` (req/s; wrk waits for a body on HEAD). Runs interleave the servers, so
drift on this machine hits every server alike, and each ratio is the median of the
per-round ratios. --quick: 3 rounds of the 1 GiB GET, 1 s load runs, no peer.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from contextlib import ExitStack

import common as c

SERVERS = ("minimal nginx", "withcache nginx", "withcache-server 0.13.3")


def curl_rate(url: str, size: int) -> float:
    """MB/s of one GET to /dev/null."""
    t0 = time.perf_counter()
    out = c.run(["curl", "-sSf", "-o", "/dev/null", "-w", "%{size_download}", url], timeout=120)
    dt = time.perf_counter() - t0
    if int(out.stdout) != size:
        raise RuntimeError(f"{url}: got {out.stdout} bytes, want {size}")
    return size / dt / 1e6


def wrk_rps(url: str, seconds: int) -> float:
    """GET requests/s: wrk, 2 threads, 32 keep-alive connections, `seconds` long."""
    out = c.run(
        ["wrk", "-t2", "-c32", f"-d{seconds}s", "--timeout", "5s", url], timeout=seconds + 30
    ).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors on {url}:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]


def ab_head_rps(url: str, seconds: int) -> float:
    """HEAD requests/s: ab -k -i, 32 keep-alive connections, at most 50,000 or `seconds`."""
    out = c.run(
        ["ab", "-q", "-k", "-i", "-c32", "-t", str(seconds), "-n", "50000", url],
        timeout=seconds + 30,
    ).stdout
    failed = re.search(r"Failed requests:\s+(\d+)", out)
    if (failed and int(failed.group(1))) or "Non-2xx" in out:
        raise RuntimeError(f"ab saw errors on {url}:\n{out}")
    return float(re.search(r"Requests per second:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]


def interleaved(
    measure: Callable[[str], float], urls: dict[str, str], runs: int
) -> dict[str, c.Stats]:
    """Run `measure(url)` for every server in turn, `runs` rounds."""
    samples: dict[str, list[float]] = {name: [] for name in urls}
    for _ in range(runs):
        for name, url in urls.items():
            samples[name].append(measure(url))
    return {name: c.Stats(v) for name, v in samples.items()}


def add_rows(
    table: c.Table,
    title: str,
    stats: dict[str, c.Stats],
    unit: str,
    target: float,
    skipped: dict[str, str],
) -> None:
    base = f"{title}, {SERVERS[0]}"
    table.add(base, stats[SERVERS[0]], unit, baseline=True)
    ours = table.add(f"{title}, {SERVERS[1]}", stats[SERVERS[1]], unit, target=target, paired=True)
    if SERVERS[2] in stats:
        peer = stats[SERVERS[2]]
        times = (ours.median or 0) / peer.median if peer.median else float("inf")
        table.add(
            f"{title}, {SERVERS[2]}",
            peer,
            unit,
            baseline=base,
            paired=True,
            note=f"withcache nginx serves {times:.1f}x this",
        )
    else:
        table.skip(f"{title}, {SERVERS[2]}", skipped.get(SERVERS[2], "not running"))


def main() -> int:
    args = c.parse_args("serve")
    runs = args.runs or 5
    big_runs = args.runs or (3 if args.quick else 5)
    load_s = 1 if args.quick else 2
    table = c.Table("serve", args.json)

    with c.tmpdir("bench-serve") as tmp, ExitStack() as stack:
        origin_dir = tmp / "origin"
        c.log("writing the 1 GiB file")
        c.make_file(origin_dir / "big.bin", c.GiB)
        c.make_file(origin_dir / "small.bin", 4096, seed=1)
        origin = stack.enter_context(c.static_origin(origin_dir))
        big_url, small_url = f"{origin}/big.bin", f"{origin}/small.bin"

        data = tmp / "data"
        manifest = tmp / "manifest.yaml"
        manifest.write_text(f"artifacts:\n  - {big_url}\n  - {small_url}\n")
        c.log("withcache sync of the 1 GiB and 4 KiB files")
        c.run([*c.WITHCACHE, "sync", "-q", "--data", str(data), "-m", str(manifest)], timeout=300)

        urls: dict[str, dict[str, str]] = {"big": {}, "small": {}}
        c.log("starting the servers")
        # Baseline: nginx's ceiling over the very same files in www/.
        port = c.free_port()
        conf = c.minimal_nginx_conf(data / "www", port, tmp / "minimal")
        stack.enter_context(c.nginx_running(conf, tmp / "minimal", port))
        for k, u in (("big", big_url), ("small", small_url)):
            token_dir = c.cache_path(u).rsplit("/", 1)[0]  # the file itself: /b/<token>/@data
            urls[k][SERVERS[0]] = f"http://127.0.0.1:{port}{token_dir}/@data"
        # Ours: exactly what an operator runs.
        port = c.free_port()
        argv = [*c.WITHCACHE, "serve", "--data", str(data), "--listen", f"127.0.0.1:{port}"]
        stack.enter_context(c.serving(argv, port))
        for k, u in (("big", big_url), ("small", small_url)):
            urls[k][SERVERS[1]] = f"http://127.0.0.1:{port}{c.cache_path(u)}"
        # The PyPI peer, seeded through its API from the same origin.
        skipped: dict[str, str] = {}
        venv, why = (None, "full run only") if args.quick else c.ensure_peer()
        if venv is None:
            skipped[SERVERS[2]] = why
        else:
            peer = stack.enter_context(c.peer_server(venv, tmp / "peer"))
            c.log("seeding withcache-server through its API")
            for k, u in (("big", big_url), ("small", small_url)):
                peer.fill(u, k)
                urls[k][SERVERS[2]] = peer.blob_url(u)

        c.log(f"1 GiB GET x{big_runs}")
        stats = interleaved(lambda u: curl_rate(u, c.GiB), urls["big"], big_runs)
        add_rows(table, "1 GiB GET (curl)", stats, "MB/s", 0.95, skipped)

        for title, tool, fn in (
            ("4 KiB GET (wrk)", "wrk", wrk_rps),
            ("4 KiB HEAD (ab -k -i)", "ab", ab_head_rps),
        ):
            if not c.have(tool):
                for s in SERVERS:
                    table.skip(f"{title}, {s}", f"{tool} is not installed")
                continue
            c.log(f"{title} x{runs}, {load_s}s each")
            stats = interleaved(lambda u, fn=fn: fn(u, load_s), urls["small"], runs)
            add_rows(table, title, stats, "req/s", 0.9, skipped)

    return table.finish()


if __name__ == "__main__":
    raise SystemExit(main())
