#!/usr/bin/env python3
"""watch: how fast the watcher reads an access log, and how soon a 404 is queryable.

Throughput: a 1,000,000-line access log in nginx's JSON format (200,000 with --quick),
read by `withcache watch --once` (a fresh process each run: startup, parsing, SQLite
commits and all), against two baselines measured in the same rounds: `wc -l` (the
disk and the kernel) and a bare Python loop of json.loads over the same lines (the
floor for any JSON-parsing watcher in Python). Target: >= 100,000 lines/s.

Delay: real nginx (`withcache serve`) and a real watcher process; HEAD requests for
uncached URLs, one at a time, each timed from sending the request (so nginx's own
answer is included: an upper bound) to the moment the miss is in the state DB (what
`withcache misses` reads). Target: median < 1 s.

Everything runs on loopback under a temporary directory; every process started here
is stopped in a `finally`.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import sqlite3
import statistics
import subprocess
import time
from pathlib import Path

import common as c

from withcache import keys, watch
from withcache.accesslog import parse_line
from withcache.layout import Layout

TARGET_RATE = 100_000  # lines/s
TARGET_DELAY_MS = 1000.0


def make_log(path: Path, lines: int, seed: int = 1) -> int:
    """A plausible mix: 70% GET hits on 200 artifacts, 20% GET/HEAD misses on 2,000 URLs,
    5% HEAD probes answered 200, 5% index pages. Returns the size in bytes."""
    rng = random.Random(seed)
    hits = [keys.cache_path(f"https://vendor.example/pkg/file-{i}.tar.gz") for i in range(200)]
    misses = [keys.cache_path(f"https://other.example/dl/miss-{i}.run") for i in range(2000)]
    t0 = 1_795_255_200
    with path.open("w") as f:
        out = []
        for i in range(lines):
            r = rng.random()
            if r < 0.7:
                uri, status, method, n = rng.choice(hits), 200, "GET", rng.randrange(1, 1 << 30)
            elif r < 0.9:
                uri, status, method, n = rng.choice(misses), 404, rng.choice(("GET", "HEAD")), 0
            elif r < 0.95:
                uri, status, method, n = rng.choice(hits), 200, "HEAD", 0
            else:
                uri, status, method, n = "/index.html", 200, "GET", 5123
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(t0 + i // 2000))
            out.append(
                f'{{"time":"{stamp}","addr":"10.{i % 7}.{i % 11}.{i % 13}","method":"{method}",'
                f'"uri":"{uri}","status":{status},"bytes":{n},"ua":"curl/8.5.0","range":"",'
                f'"rt":0.001}}\n'
            )
            if len(out) >= 10_000:
                f.write("".join(out))
                out = []
        f.write("".join(out))
    return path.stat().st_size


def wc_rate(log: Path, lines: int) -> float:
    t0 = time.perf_counter()
    out = c.run(["wc", "-l", str(log)], timeout=120).stdout
    dt = time.perf_counter() - t0
    assert int(out.split()[0]) == lines
    return lines / dt


def python_rate(log: Path, lines: int, per_line: object) -> float:
    """Lines/s of a loop calling per_line() on every line: read in 1 MiB chunks, split."""
    fn = per_line
    t0 = time.perf_counter()
    n = 0
    rest = b""
    with log.open("rb") as f:
        while chunk := f.read(1 << 20):
            chunk = rest + chunk
            cut = chunk.rfind(b"\n") + 1
            rest = chunk[cut:]
            for line in chunk[:cut].decode("utf-8", "replace").split("\n")[:-1]:
                fn(line)  # type: ignore[operator]
                n += 1
    dt = time.perf_counter() - t0
    assert n == lines
    return lines / dt


def watch_rate(log: Path, lines: int, work: Path, rss: list[float]) -> float:
    """Lines/s of `withcache watch --once` on a fresh data dir; its peak RSS goes to rss."""
    data = work / "data-throughput"
    subprocess.run(["rm", "-rf", str(data)], check=True)
    argv = [*c.WITHCACHE, "watch", "--once", "-q", "--index-every", "0", "--data", str(data)]
    t0 = time.perf_counter()
    proc = subprocess.Popen([*argv, "--log", str(log)], stderr=subprocess.PIPE)
    try:
        _pid, status, usage = os.wait4(proc.pid, 0)  # wait, and get the child's peak RSS
    except BaseException:
        c.stop(proc)  # type: ignore[arg-type]
        raise
    dt = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"watch --once exited {proc.returncode}: {err[-2000:]}")
    rss.append(usage.ru_maxrss / 1024)  # KiB -> MiB
    conn = sqlite3.connect(data / "state" / "withcache.db")
    read = dict(conn.execute("SELECT name, value FROM counters").fetchall())["lines"]
    conn.close()
    assert read == lines, (read, lines)
    return lines / dt


def throughput(table: c.Table, lines: int, runs: int, work: Path) -> None:
    log = work / "access.log"
    c.log(f"writing a {lines:,}-line access log")
    size = make_log(log, lines)
    c.log(f"{size / c.MiB:.0f} MiB")
    rates: dict[str, list[float]] = {k: [] for k in ("wc", "json", "parse", "watch")}
    rss: list[float] = []
    for i in range(runs):  # interleaved rounds: drift on this machine hits every case alike
        rates["wc"].append(wc_rate(log, lines))
        rates["json"].append(python_rate(log, lines, json.loads))
        rates["parse"].append(python_rate(log, lines, parse_line))
        rates["watch"].append(watch_rate(log, lines, work, rss))
        c.log(f"round {i + 1}/{runs}: watch {rates['watch'][-1]:,.0f} lines/s")
    n = f"{lines // 1000:,}k-line log"
    table.add(f"{n}: wc -l", c.Stats(rates["wc"]), "lines/s", baseline=True)
    table.add(
        f"{n}: json.loads loop (parse only, no counting)",
        c.Stats(rates["json"]),
        "lines/s",
        baseline=True,
        note="the floor for a Python JSON log reader",
    )
    table.add(f"{n}: accesslog.parse_line loop", c.Stats(rates["parse"]), "lines/s", paired=True)
    med = statistics.median(rates["watch"])
    table.add(
        f"{n}: withcache watch --once (process, SQLite)",
        c.Stats(rates["watch"]),
        "lines/s",
        baseline=f"{n}: json.loads loop (parse only, no counting)",
        paired=True,
        note=f"target >= {TARGET_RATE:,} lines/s: {'met' if med >= TARGET_RATE else 'NOT met'}; "
        f"peak RSS {max(rss):.0f} MiB for a {size / c.MiB:.0f} MiB log",
    )
    table.add(
        f"{n}: withcache watch --once vs wc -l",
        c.Stats(rates["watch"]),
        "lines/s",
        baseline=f"{n}: wc -l",
        paired=True,
    )
    log.unlink()


def delay(table: c.Table, runs: int, per_run: int, work: Path) -> None:
    data = work / "data-delay"
    Layout(data).ensure()
    port = c.free_port()
    serve = [*c.WITHCACHE, "serve", "--data", str(data), "--listen", f"127.0.0.1:{port}"]
    medians: list[float] = []
    p99s: list[float] = []
    every: list[float] = []
    with c.serving(serve, port, timeout=20):
        watcher = subprocess.Popen(
            [*c.WITHCACHE, "watch", "-q", "--index-every", "0", "--data", str(data)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            db = data / "state" / "withcache.db"
            log_id = watch.log_id(Layout(data).access_log)
            deadline = time.monotonic() + 30
            conn = None
            while time.monotonic() < deadline:  # until the watcher has its checkpoint
                if db.exists():
                    conn = conn or sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
                    try:
                        q = "SELECT 1 FROM log_offsets WHERE log = ?"
                        if conn.execute(q, (log_id,)).fetchone():
                            break
                    except sqlite3.OperationalError:
                        pass
                time.sleep(0.05)
            else:
                raise RuntimeError("the watcher did not start")
            assert conn is not None
            http_conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            for r in range(runs):
                samples = []
                for i in range(per_run):
                    key = f"https://bench.example/delay/{os.getpid()}/{r}/{i}.bin"
                    t0 = time.perf_counter()  # an upper bound: includes nginx's own answer
                    http_conn.request("HEAD", keys.cache_path(key))
                    resp = http_conn.getresponse()
                    resp.read()
                    assert resp.status == 404
                    q = "SELECT 1 FROM misses WHERE key = ?"
                    while conn.execute(q, (key,)).fetchone() is None:
                        if time.perf_counter() - t0 > 30:
                            raise RuntimeError(f"miss not recorded after 30 s: {key}")
                        time.sleep(0.001)
                    samples.append((time.perf_counter() - t0) * 1000)
                    time.sleep(0.02)  # the next request finds the watcher idle again
                samples.sort()
                medians.append(statistics.median(samples))
                p99s.append(samples[min(len(samples) - 1, int(len(samples) * 0.99))])
                every += samples
                c.log(f"delay round {r + 1}/{runs}: median {medians[-1]:.1f} ms")
            http_conn.close()
            conn.close()
        finally:
            c.stop(watcher)  # type: ignore[arg-type]
    every.sort()
    overall_p99 = every[min(len(every) - 1, int(len(every) * 0.99))]
    table.add(
        f"404 -> queryable: target ({TARGET_DELAY_MS:.0f} ms)",
        c.Stats([TARGET_DELAY_MS]),
        "ms",
        baseline=True,
    )
    table.add(
        f"404 -> queryable: median per round ({per_run} requests)",
        c.Stats(medians),
        "ms",
        note=f"overall median {statistics.median(every):.1f} ms over {len(every)} requests",
    )
    table.add(
        f"404 -> queryable: p99 per round ({per_run} requests)",
        c.Stats(p99s),
        "ms",
        note=f"overall p99 {overall_p99:.1f} ms, max {every[-1]:.1f} ms",
    )


def main() -> int:
    args = c.parse_args("watch")
    runs = args.runs or (3 if args.quick else 5)
    lines = 200_000 if args.quick else 1_000_000
    table = c.Table("watch", args.json)
    with c.tmpdir("bench-watch") as work:
        throughput(table, lines, runs, work)
        if c.have("nginx") or Path("/usr/sbin/nginx").exists():
            delay(table, runs, 20 if args.quick else 40, work)
        else:
            table.skip("404 -> queryable", "nginx is not installed")
    return table.finish()


if __name__ == "__main__":
    raise SystemExit(main())
