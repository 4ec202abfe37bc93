"""The watcher as a real process: exact counts through kill -9, rotation and SIGTERM.

Log lines are written here in the JSON format nginx uses (nginx itself is in
test_misses_e2e.py); what each line should count as is decided here, independently
of the parser, and compared with what the state DB holds at the end.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import LONG, ROOT, run_withcache, withcache_cmd
from tests.watcher import Watcher, checkpoint, db
from withcache import keys

T0 = 1_795_255_200  # 2026-11-21T10:00:00Z


def nginx_line(
    uri: str,
    status: int = 404,
    method: str = "GET",
    *,
    addr: str = "10.0.0.1",
    ua: str = "curl/8.5.0",
    nbytes: int = 0,
    t: int = T0,
) -> bytes:
    """One access-log line as `log_format withcache escape=json` writes it."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(t))
    d = {
        "time": stamp,
        "addr": addr,
        "method": method,
        "uri": uri,
        "status": status,
        "bytes": nbytes,
        "ua": ua,
        "range": "",
        "rt": 0.001,
    }
    return json.dumps(d, separators=(",", ":")).encode() + b"\n"


@dataclass
class Expected:
    """What a stream of lines must add up to."""

    lines: int = 0
    hits: Counter[str] = field(default_factory=Counter)
    hit_bytes: Counter[str] = field(default_factory=Counter)
    misses: Counter[str] = field(default_factory=Counter)
    clients: dict[str, set[str]] = field(default_factory=dict)
    invalid: int = 0
    garbage: int = 0

    @property
    def url_misses(self) -> int:
        return sum(n for k, n in self.misses.items() if not k.startswith("python:"))

    @property
    def project_misses(self) -> int:
        return sum(n for k, n in self.misses.items() if k.startswith("python:"))


HIT_KEYS = [f"https://vendor.example/pkg/tool-{i}.tar.gz" for i in range(40)]
MISS_URLS = [f"https://other.example/dl/miss-{i}.run" for i in range(300)]
PROJECTS = ["torch", "numpy", "jax", "scipy"]


def traffic(rng: random.Random, n: int, exp: Expected, t: int = T0) -> bytes:
    """n lines of a plausible mix, with `exp` updated to what they must count as."""
    out = []
    for i in range(n):
        r = rng.random()
        addr = f"10.0.{rng.randrange(4)}.{rng.randrange(8)}"
        when = t + i // 1000
        if r < 0.55:
            key = rng.choice(HIT_KEYS)
            nbytes = rng.randrange(1, 1 << 20)
            status = 206 if r < 0.05 else 200
            out.append(nginx_line(keys.cache_path(key), status, nbytes=nbytes, addr=addr, t=when))
            exp.hits[key] += 1
            exp.hit_bytes[key] += nbytes
        elif r < 0.60:
            key = rng.choice(HIT_KEYS)
            out.append(nginx_line(keys.cache_path(key), 200, "HEAD", t=when))  # not a hit
        elif r < 0.80:
            url = rng.choice(MISS_URLS)
            typed = (
                url.replace("https://other.example", "HTTPS://Other.Example:443")
                if r < 0.62
                else url
            )
            tok = keys.token(typed)
            uri = f"/b/{tok}/{keys.name(url)}"
            out.append(nginx_line(uri, 404, rng.choice(["GET", "HEAD"]), addr=addr, t=when))
            exp.misses[url] += 1
            exp.clients.setdefault(url, set()).add(addr)
        elif r < 0.82:
            name = rng.choice(PROJECTS)
            shown = name.upper() if r < 0.81 else name
            out.append(nginx_line(f"/simple/{shown}/", 404, addr=addr, t=when))
            exp.misses["python:" + name] += 1
            exp.clients.setdefault("python:" + name, set()).add(addr)
        elif r < 0.85:
            bad = keys.token(rng.choice(["javascript:alert(1)", "<b>x</b>", "ftp://h/x"]))
            out.append(nginx_line(f"/b/{bad}/x", 404, t=when))
            exp.invalid += 1
        elif r < 0.87:
            out.append(rng.choice([b"garbage\n", b'{"half": \n', b"\xff\xfe\n", b"[]\n"]))
            exp.garbage += 1
        else:
            out.append(nginx_line(rng.choice(["/", "/index.html", "/healthz"]), 200, t=when))
        exp.lines += 1
    return b"".join(out)


@pytest.fixture
def watchers() -> Iterator[list[Watcher]]:
    """Every watcher a test starts is stopped, whatever happens."""
    started: list[Watcher] = []
    yield started
    for w in started:
        w.stop()


def wait_caught_up(data: Path, log: Path, timeout: float = 60) -> None:
    """Until the checkpoint is at the end of the current log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = log.stat()
        if checkpoint(data, log) == (st.st_ino, st.st_size):
            return
        time.sleep(0.05)
    raise AssertionError(f"watcher did not catch up: {checkpoint(data, log)} vs {log.stat()}")


def wait_started(data: Path, log: Path, w: Watcher) -> None:
    """Until this watcher has committed (it commits its position once it opened the log)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        row = None
        if (data / "state" / "withcache.db").exists():
            conn = db(data)
            try:
                row = conn.execute(
                    "SELECT updated FROM log_offsets WHERE log = ?", (os.path.abspath(log),)
                ).fetchone()
            except sqlite3.OperationalError:  # tables not created yet
                pass
            finally:
                conn.close()
        if row is not None and row[0] >= w.started:
            return
        time.sleep(0.02)
    raise AssertionError("the watcher did not start")


def wait_for_progress(data: Path, log: Path, since: tuple[int, int] | None) -> None:
    """Until a (re)started watcher has committed something."""
    deadline = time.monotonic() + 30
    while checkpoint(data, log) == since and time.monotonic() < deadline:
        time.sleep(0.01)


def assert_counts(data: Path, exp: Expected) -> None:
    conn = db(data)
    try:
        hits = {k: (c, b) for k, c, b in conn.execute("SELECT key, count, bytes FROM hits")}
        misses = {k: (c, n) for k, c, n in conn.execute("SELECT key, count, clients FROM misses")}
        counters = dict(conn.execute("SELECT name, value FROM counters").fetchall())
    finally:
        conn.close()
    assert hits == {k: (exp.hits[k], exp.hit_bytes[k]) for k in exp.hits}
    assert misses == {k: (exp.misses[k], len(exp.clients[k])) for k in exp.misses}
    assert counters.get("lines", 0) == exp.lines
    assert counters.get("hits", 0) == sum(exp.hits.values())
    assert counters.get("hit_bytes", 0) == sum(exp.hit_bytes.values())
    assert counters.get("misses", 0) == exp.url_misses
    assert counters.get("project_misses", 0) == exp.project_misses
    assert counters.get("invalid", 0) == exp.invalid
    assert counters.get("garbage", 0) == exp.garbage


def write_in_pieces(
    log: Path, data: bytes, pieces: int, seconds: float, rng: random.Random
) -> None:
    """Append `data` in `pieces` writes cut at random bytes (mid-line too), over `seconds`."""
    cuts = sorted(rng.sample(range(1, len(data)), pieces - 1))
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True):
            os.write(fd, data[a:b])
            time.sleep(seconds / pieces)
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("lines", "kills"),
    [
        pytest.param(100_000, 5, id="100k-lines-5-kills"),
        pytest.param(
            1_000_000,
            25,
            id="1M-lines-25-kills",
            marks=pytest.mark.skipif(not LONG, reason="long campaign: WITHCACHE_LONG=1"),
        ),
    ],
)
def test_kill_9_at_random_points_neither_loses_nor_double_counts(
    tmp_path: Path, watchers: list[Watcher], lines: int, kills: int
) -> None:
    seed = int(os.environ.get("WITHCACHE_SEED", "20261121"))
    rng = random.Random(seed)
    data, log = tmp_path / "data", tmp_path / "access.log"
    exp = Expected()
    body = traffic(rng, lines, exp)
    seconds = 8.0 if lines <= 100_000 else 40.0
    writer = threading.Thread(
        target=write_in_pieces, args=(log, body, max(50, lines // 1000), seconds, rng)
    )
    writer.start()
    try:
        watchers.append(Watcher(data, log, "-q"))
        at_kill = []
        for _ in range(kills):
            wait_started(data, log, watchers[-1])
            time.sleep(rng.uniform(0, 0.4))  # somewhere between two commits, or in one
            at_kill.append(checkpoint(data, log))
            watchers[-1].kill9()
            watchers.append(Watcher(data, log, "-q"))
    finally:
        writer.join()
    wait_caught_up(data, log)
    wait_started(data, log, watchers[-1])  # its SIGTERM handler is in place
    assert watchers[-1].term() == 0
    assert_counts(data, exp)
    offsets = [c[1] for c in at_kill if c is not None]
    assert len({o for o in offsets if 0 < o < len(body)}) >= min(3, kills), (
        f"kills did not land mid-stream (seed {seed}): {offsets}"
    )


def test_sigterm_commits_what_was_read_and_a_restart_finishes_exactly(
    tmp_path: Path, watchers: list[Watcher]
) -> None:
    rng = random.Random(7)
    data, log = tmp_path / "data", tmp_path / "access.log"
    exp = Expected()
    log.write_bytes(traffic(rng, 150_000, exp))
    w = Watcher(data, log)
    watchers.append(w)
    deadline = time.monotonic() + 30
    while (checkpoint(data, log) or (0, 0))[1] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert w.term() == 0
    assert "lines read" in w.stderr
    at = checkpoint(data, log)
    assert at is not None
    conn = db(data)
    read = dict(conn.execute("SELECT name, value FROM counters").fetchall())["lines"]
    conn.close()
    assert read == log.read_bytes()[: at[1]].count(b"\n")  # the checkpoint matches the counts
    watchers.append(Watcher(data, log))
    wait_caught_up(data, log)
    assert_counts(data, exp)


@pytest.mark.parametrize("how", ["rename", "copytruncate"])
def test_rotation_in_the_middle_of_traffic_keeps_exact_counts(
    tmp_path: Path, watchers: list[Watcher], how: str
) -> None:
    rng = random.Random(11)
    data, log = tmp_path / "data", tmp_path / "access.log"
    exp = Expected()
    lock = threading.Lock()  # copytruncate happens between two of nginx's writes
    stop = threading.Event()
    fds = [os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)]

    def nginx() -> None:
        t = T0
        while not stop.is_set():
            with lock:
                os.write(fds[0], traffic(rng, 200, exp, t))
            t += 1
            time.sleep(0.002)

    watchers.append(Watcher(data, log, "-q"))
    wait_for_progress(data, log, since=None)  # it knows the log before the first rotation
    writer = threading.Thread(target=nginx)
    writer.start()
    try:
        for n in range(1, 3):  # rotate twice
            time.sleep(0.5)
            rotated = log.with_name(f"access.log.{n}")
            if how == "rename":
                with lock:
                    log.rename(rotated)
                time.sleep(0.2)  # nginx keeps writing to the renamed file until told
                with lock:
                    os.close(fds[0])
                    fds[0] = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            else:
                with lock:
                    shutil.copyfile(log, rotated)
                    os.truncate(log, 0)
        time.sleep(0.5)
    finally:
        stop.set()
        writer.join()
        os.close(fds[0])
    wait_caught_up(data, log)
    assert exp.lines > 1000
    assert_counts(data, exp)
    assert watchers[0].term() == 0


def test_a_log_that_does_not_exist_yet_and_hostile_lines(
    tmp_path: Path, watchers: list[Watcher]
) -> None:
    data, log = tmp_path / "data", tmp_path / "logs" / "access.log"
    watchers.append(Watcher(data, log, "-q"))
    time.sleep(0.5)
    log.parent.mkdir()
    url = "https://vendor.example/after.bin"
    hostile = [
        b"{not json\n",
        b"{" + b"x" * 1_000_000 + b"}\n",
        b"\0" * 10_000 + b"\n",
        nginx_line("/b/" + keys.token("javascript:alert(1)") + "/x"),
        nginx_line(keys.cache_path(url), ua="A" * 1_000_000),
        b"\x00\x00" + nginx_line(keys.cache_path(url)),
        nginx_line(keys.cache_path(url), ua="\ud800 lone surrogate"),  # not storable as is
    ]
    log.write_bytes(b"".join(hostile))
    wait_caught_up(data, log, timeout=20)
    out = run_withcache("misses", "--json", "--data", str(data))
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [(r["url"], r["count"]) for r in rows] == [(url, 3)]
    assert len(rows[0]["last_ua"]) <= 300
    conn = db(data)
    counters = dict(conn.execute("SELECT name, value FROM counters").fetchall())
    conn.close()
    assert (counters["garbage"], counters["invalid"], counters["lines"]) == (3, 1, 7)
    assert watchers[0].proc.poll() is None  # still running


def test_one_watcher_per_data_dir(tmp_path: Path, watchers: list[Watcher]) -> None:
    data, log = tmp_path / "data", tmp_path / "access.log"
    log.write_bytes(b"")
    watchers.append(Watcher(data, log, "-q"))
    deadline = time.monotonic() + 20
    while checkpoint(data, log) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    second = run_withcache("watch", "--once", "--data", str(data), "--log", str(log))
    assert second.returncode == 1
    assert "another watcher is running" in second.stderr


def test_once_reads_from_the_start_without_a_checkpoint_then_only_what_is_new(
    tmp_path: Path,
) -> None:
    data, log = tmp_path / "data", tmp_path / "access.log"
    url = "https://vendor.example/x.iso"
    log.write_bytes(nginx_line(keys.cache_path(url)) * 3)
    assert (
        run_withcache("watch", "--once", "-q", "--data", str(data), "--log", str(log)).returncode
        == 0
    )
    with log.open("ab") as f:
        f.write(nginx_line(keys.cache_path(url), method="HEAD"))
    r = run_withcache("watch", "--once", "--data", str(data), "--log", str(log))
    assert r.returncode == 0 and "1 lines read" in r.stderr
    rows = json.loads(run_withcache("misses", "--json", "--data", str(data)).stdout)
    assert rows[0]["count"] == 4
    status = run_withcache("watch", "--status", "--json", "--data", str(data), "--log", str(log))
    doc = json.loads(status.stdout)
    assert (doc["offset"], doc["behind"]) == (log.stat().st_size, 0)


DEPLOY = ROOT / "withcache" / "deploy"


def test_deployment_files_run_real_commands() -> None:
    """Every withcache command line in the units and the crontab parses as written."""
    import re
    import shlex

    from withcache.cli import build_parser

    seen = set()
    for f in sorted(DEPLOY.iterdir()):
        commands = [  # ExecStart= lines and crontab entries
            x
            for x in f.read_text().splitlines()
            if x.startswith("ExecStart=") or x[:1] in "0123456789*@"
        ]
        text = "\n".join(commands)
        for m in re.finditer(
            r"\bwithcache ((?:watch|sync|report|misses|add)[^;|&)>'\"$\n]*)", text
        ):
            args = shlex.split(m.group(1))
            ns = build_parser().parse_args(args)  # exits (fails the test) on a bad option
            seen.add(ns.command)
    assert {"watch", "sync", "report"} <= seen


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="no systemd-analyze")
def test_systemd_units_verify() -> None:
    units = [str(p) for p in sorted(DEPLOY.glob("withcache-*.*"))]
    r = subprocess.run(
        ["systemd-analyze", "verify", *units], capture_output=True, text=True, cwd=DEPLOY
    )
    complaints = [
        line
        for line in (r.stdout + r.stderr).splitlines()
        if line.strip() and "is not executable" not in line  # /usr/local/bin/withcache here
    ]
    assert complaints == []


def peak_rss_mib(data: Path, log: Path) -> float:
    """Peak RSS of one `watch --once` over the log (the child's own rusage)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    argv = ["watch", "--once", "-q", "--index-every", "0", "--data", str(data), "--log", str(log)]
    proc = subprocess.Popen(withcache_cmd(*argv), cwd=ROOT, env=env)
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0
    return usage.ru_maxrss / 1024


def test_memory_stays_flat_however_long_the_log(tmp_path: Path) -> None:
    rng = random.Random(5)
    small, big = tmp_path / "small.log", tmp_path / "big.log"
    small.write_bytes(traffic(rng, 20_000, Expected()))
    n = 2_000_000 if LONG else 200_000
    with big.open("wb") as f:
        for _ in range(n // 20_000):
            f.write(traffic(rng, 20_000, Expected()))
    a = peak_rss_mib(tmp_path / "d1", small)
    b = peak_rss_mib(tmp_path / "d2", big)
    assert b - a < 12, f"peak RSS {a:.0f} MiB for 20k lines, {b:.0f} MiB for {n:,}"
