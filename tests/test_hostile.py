"""What an unlucky lab meets: a full disk, hostile origins, hostile manifests, spoofing
text. Each test is one such meeting, and what must hold after it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import run_withcache, tmpfs
from tests.origin import Origin
from tests.test_sync import assert_tree_matches_records, manifest, records
from withcache import index, keys, report, store
from withcache.fmt import json_text
from withcache.layout import Layout

# --- 1. a full disk ----------------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """An 80 MiB tmpfs: a data dir that fills up for real."""
    with tmpfs(tmp_path / "small", "size=80m") as mnt:
        yield mnt


def test_a_sync_that_does_not_fit_says_so_in_one_line_every_time(
    small_fs: Path, origin: Origin
) -> None:
    urls = [origin.add(f"/big{i}.bin", os.urandom(1) * (24 << 20)) for i in range(5)]
    m = manifest(small_fs.parent, [f"- {u}" for u in urls])
    data = small_fs / "data"
    for _run in range(10):
        r = run_withcache("sync", "--data", str(data), "-m", str(m), "-j", "4")
        assert r.returncode == 1, r.stderr
        assert "Traceback" not in r.stderr
        assert "sync: " in r.stderr and " failed in " in r.stderr  # the summary line
        assert f"no space left on the data dir {data}" in r.stderr
        assert "needs 24.0 MiB" in r.stderr
        assert_tree_matches_records(Layout(data))
    # partials of failed downloads were dropped: the disk is not kept full by them
    parts = list((data / "state" / "partial").glob("*.part"))
    assert sum(p.stat().st_size for p in parts) < 48 << 20
    # what was placed is served whole; freeing space lets the next sync complete
    placed = records(Layout(data))
    assert 1 <= len(placed) <= 3
    shutil.rmtree(data)
    m2 = manifest(small_fs.parent, [f"- {u}" for u in urls[:2]], name="m2.yaml")
    r = run_withcache("sync", "--data", str(data), "-m", str(m2))
    assert r.returncode == 0, r.stderr


# --- 2. secret headers and redirects ------------------------------------------------------


def test_manifest_headers_reach_only_the_entrys_own_origin(tmp_path: Path) -> None:
    a, b = Origin(), Origin()
    try:
        b.add("/real.bin", b"real bytes")
        a.add("/moved.bin", status=302, headers={"Location": f"{b.base}/real.bin"})
        a.add("/here.bin", b"here")
        m = tmp_path / "m.yaml"
        m.write_text(
            "artifacts:\n"
            f"  - url: {a.base}/moved.bin\n"
            "    headers: {X-Api-Key: env:KEY, Authorization: env:TOKEN}\n"
            f"  - url: {a.base}/here.bin\n"
            "    headers: {X-Api-Key: env:KEY}\n"
        )
        env = {"KEY": "k-secret", "TOKEN": "t-secret"}
        # the dry run's HEADs follow the redirect the same way, and learn the size
        r = run_withcache("sync", "--dry-run", "--data", str(tmp_path / "d"), "-m", str(m), env=env)
        assert r.returncode == 0, r.stderr
        assert f"fetch  {a.base}/moved.bin  (10 B, new)" in r.stdout
        assert [(s.method, "X-Api-Key" in s.headers) for s in b.seen()] == [("HEAD", False)]
        r = run_withcache("sync", "-q", "--data", str(tmp_path / "d"), "-m", str(m), env=env)
        assert r.returncode == 0, r.stderr
        at_a = [s.headers for s in a.seen()]
        at_b = [s.headers for s in b.seen()]
        assert all(h.get("X-Api-Key") == "k-secret" for h in at_a)
        assert any(h.get("Authorization") == "t-secret" for h in at_a)
        assert at_b and not any("X-Api-Key" in h or "Authorization" in h for h in at_b)
        # named explicitly, the other host gets them
        m.write_text(
            m.read_text().replace(
                "Authorization: env:TOKEN}\n",
                f"Authorization: env:TOKEN}}\n    header_hosts: [127.0.0.1:{b.port}]\n",
            )
        )
        r = run_withcache(
            "sync", "-q", "--refresh", "--data", str(tmp_path / "d2"), "-m", str(m), env=env
        )
        assert r.returncode == 0, r.stderr
        assert b.seen()[-1].headers.get("X-Api-Key") == "k-secret"
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("/loop.bin", "redirect loop"),
        ("file:///etc/passwd", "not an http(s) URL; not followed"),
    ],
)
def test_a_bad_redirect_is_one_clear_error_without_retries(
    tmp_path: Path, origin: Origin, location: str, message: str
) -> None:
    url = origin.add("/loop.bin", status=302, headers={"Location": location})
    m = manifest(tmp_path, [f"- {url}"])
    r = run_withcache("sync", "--data", str(tmp_path / "d"), "-m", str(m))
    assert r.returncode == 1
    assert message in r.stderr
    assert "retrying" not in r.stderr
    assert len(origin.seen("/loop.bin")) <= 2


# --- 3. downloads with no end -------------------------------------------------------------


def test_an_endless_body_stops_at_max_size(tmp_path: Path, origin: Origin) -> None:
    url = origin.add("/forever", b"x" * 4096, endless=True)
    m = manifest(tmp_path, [f"- {url}"])
    data = tmp_path / "d"
    started = time.monotonic()
    r = run_withcache("sync", "--data", str(data), "-m", str(m), "--max-size", "20M")
    assert r.returncode == 1
    assert time.monotonic() - started < 30
    assert "stopped at 20.0 MiB" in r.stderr and "max_size" in r.stderr
    written = sum(p.stat().st_size for p in (data / "state" / "partial").glob("*"))
    assert written <= 22 << 20
    assert not list((data / "www" / "b").rglob("@data"))


def test_a_trickle_fails_at_the_minimum_rate(tmp_path: Path, origin: Origin) -> None:
    url = origin.add("/trickle", b"y" * (2 << 20), trickle=200)
    m = manifest(tmp_path, [f"- {url}"])
    started = time.monotonic()
    r = run_withcache(
        "sync", "--data", str(tmp_path / "d"), "-m", str(m), "--min-rate", "1M", "--retries", "0"
    )
    assert r.returncode == 1
    assert time.monotonic() - started < 15
    assert "slower than the minimum rate of 1.0 MiB/s" in r.stderr


def test_a_deadline_fails_a_download_that_takes_too_long(tmp_path: Path, origin: Origin) -> None:
    url = origin.add("/slow", b"z" * (4 << 20), slow=0.5)
    m = manifest(tmp_path, [f"- {url}"])
    r = run_withcache(
        "sync", "--data", str(tmp_path / "d"), "-m", str(m), "--deadline", "2", "--retries", "0"
    )
    assert r.returncode == 1
    assert "took longer than the deadline of 2s" in r.stderr


# --- 4. hostile manifests -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["fifo", "zero", "huge", "outside"])
def test_a_hostile_manifest_file_is_refused_quickly(tmp_path: Path, kind: str) -> None:
    d = tmp_path / "manifests"
    d.mkdir()
    (d / "ok.yaml").write_text("artifacts:\n  - https://vendor.example/a.bin\n")
    bad = d / "x.yaml"
    if kind == "fifo":
        os.mkfifo(bad)
        expected = "not a regular file"
    elif kind == "zero":
        bad.symlink_to("/dev/zero")
        expected = "outside the manifests tree"
    elif kind == "outside":
        secret = tmp_path / "elsewhere.yaml"
        secret.write_text("artifacts: []\n")
        bad.symlink_to(secret)
        expected = "outside the manifests tree"
    else:
        with bad.open("wb") as f:
            f.truncate(50 << 20)
        expected = "over the 8.0 MiB a manifest may be"
    started = time.monotonic()
    r = run_withcache("check", str(d), timeout=20)
    assert time.monotonic() - started < 2 + 1.5  # the interpreter's start is ~0.5 s
    assert r.returncode == 2
    assert r.stderr.startswith(f"withcache: error: {bad}: ") and expected in r.stderr


def test_dev_zero_named_directly_is_refused(tmp_path: Path) -> None:
    r = run_withcache("check", "/dev/zero", timeout=20)
    assert r.returncode == 2 and "not a regular file" in r.stderr


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://a:99999999999999999999/x", "ports run from 1 to 65535"),
        ("http://a:0/x", "ports run from 1 to 65535"),
        ("https://vendor.example/a\u202eexe.bin", "U+202E"),
        ("https://vendor.example/a\x00.bin", "U+0000"),
        ("https://vendor.example/a\x1b[31m.bin", "U+001B"),
    ],
)
def test_urls_with_bad_ports_or_hidden_characters_are_refused(
    tmp_path: Path, url: str, expected: str
) -> None:
    m = tmp_path / "m.yaml"
    m.write_text(f'artifacts:\n  - "{url.encode("unicode_escape").decode()}"\n')
    r = run_withcache("check", str(m))
    assert r.returncode == 2
    assert f"{m}:2: " in r.stderr and expected in r.stderr


def test_a_manifest_of_duplicates_prints_a_bounded_report(tmp_path: Path) -> None:
    m = tmp_path / "m.yaml"
    m.write_text("artifacts:\n" + "  - https://vendor.example/same.bin\n" * 5000)
    r = run_withcache("check", str(m))
    assert r.returncode == 2
    lines = r.stderr.splitlines()
    assert len(lines) < 40
    assert "and 4,979 more like:" in r.stderr


# --- 5. control characters never reach a page or a terminal --------------------------------


HIDDEN = "\u202e\x00\x1b"


def test_pages_and_terminal_output_show_control_characters_visibly(
    tmp_path: Path, data: Layout
) -> None:
    conn = store.connect(data.db)
    try:
        t = store.Traffic()
        url = f"https://vendor.example/evil{HIDDEN}gpj.exe"
        t.misses[keys.normalize(url)] = store.MissTally(url, "url", 3, 1.0, 2.0, f"ua{HIDDEN}")
        t.counters = {"misses": 3}
        store.record_traffic(conn, t, "log", store.Checkpoint(1, 1))
    finally:
        conn.close()
    index.render(data)
    for fmt in report.FORMATS:
        r = run_withcache("report", "--peek", "--format", fmt, "--data", str(data.root))
        assert r.returncode == 0, r.stderr
        assert not any(c in r.stdout for c in HIDDEN), fmt
        assert "\\u202e" in r.stdout or fmt == "json"
    r = run_withcache("misses", "--data", str(data.root))
    assert not any(c in r.stdout for c in HIDDEN)
    for page in ("index.html", "report.html"):
        text = (data.www / page).read_text()
        bad = [c for c in text if unicodedata.category(c) in {"Cc", "Cf"} and c not in "\n\t"]
        assert not bad, (page, bad)
        assert "\\u202e" in text


def test_visible_is_what_the_pages_use() -> None:
    from withcache.fmt import visible

    assert visible("a\u202eb\x00c") == "a\\u202eb\\u0000c"
    assert visible("plain text") == "plain text"


@given(st.recursive(st.text(), lambda kids: st.lists(kids) | st.dictionaries(st.text(), kids)))
@settings(max_examples=300, deadline=None)
def test_json_text_means_the_same_and_hides_nothing(value: object) -> None:
    text = json_text(value, indent=1)
    assert json.loads(text) == value
    assert not any(unicodedata.category(c) in {"Cc", "Cf", "Zl", "Zp"} for c in text if c != "\n")


def test_the_watcher_on_a_full_disk_says_so_waits_and_counts_exactly(
    small_fs: Path, tmp_path: Path
) -> None:
    from tests.test_watch import nginx_line
    from tests.watcher import Watcher, db

    data, log = small_fs / "data", tmp_path / "access.log"
    misses = [f"/b/{keys.token(f'https://vendor.example/m{i}.bin')}/m{i}.bin" for i in range(700)]
    log.write_bytes(b"".join(nginx_line(u) for u in misses[:100]))
    w = Watcher(data, log)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _lines_counted(data) != "100":
            time.sleep(0.1)
        filler = small_fs / "filler"
        fill(filler)
        with log.open("ab") as f:  # 600 more misses, each a new row: these need room
            f.write(
                b"".join(
                    nginx_line(u, addr=f"10.1.{i // 250}.{i % 250}")
                    for i, u in enumerate(misses[100:])
                )
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "is full" not in w.stderr:
            time.sleep(0.1)
        assert "is full" in w.stderr and w.proc.poll() is None, w.stderr
        assert "Traceback" not in w.stderr and "cannot rollback" not in w.stderr
        filler.unlink()  # room again: the waiting lines are recorded, once
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _lines_counted(data) != "700":
            time.sleep(0.2)
        assert w.term() == 0
    finally:
        w.stop()
    conn = db(data)
    try:
        rows = dict(conn.execute("SELECT key, count FROM misses").fetchall())
        counters = dict(conn.execute("SELECT name, value FROM counters").fetchall())
    finally:
        conn.close()
    assert len(rows) == 700 and set(rows.values()) == {1}
    assert counters["lines"] == 700 and counters["misses"] == 700


def _lines_counted(data: Path) -> str:
    from tests.watcher import db

    if not (data / "state" / "withcache.db").exists():
        return ""
    conn = db(data)
    try:
        row = conn.execute("SELECT value FROM counters WHERE name = 'lines'").fetchone()
    except sqlite3.OperationalError:
        return ""
    finally:
        conn.close()
    return str(row[0]) if row else ""


def fill(path: Path) -> None:
    """Write zeros to `path` until its filesystem has not one block left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (1 << 20, 4096, 512):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)


def test_the_report_command_offers_every_format_report_writes() -> None:
    from withcache.cli import review

    assert review.REPORT_FORMATS == report.FORMATS
