"""The disk budget through real nginx, a real watcher and a real origin (issue: running
it for a year): auto-fills over a budget, a reader during an eviction, a small disk."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import Cache, plant, run_withcache, start_nginx, stop_nginx, tmpfs
from tests.origin import Origin
from tests.test_misses_e2e import caught_up, wait_for
from tests.watcher import Watcher, checkpoint
from withcache import budget, keys, store, tree
from withcache.layout import Layout

KiB = 1 << 10
MiB = 1 << 20


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def records(data: Path) -> dict[str, store.Artifact]:
    conn = store.connect(Layout(data).db)
    try:
        return store.artifacts(conn)
    finally:
        conn.close()


def test_thirty_auto_fills_over_a_budget_evict_the_least_recently_hit_unlisted(
    cache: Cache, origin: Origin, tmp_path: Path
) -> None:
    size = 256 * KiB
    listed = [origin.add(f"/listed/{i}.bin", bytes([i]) * size) for i in range(3)]
    bodies = [os.urandom(size) for _ in range(30)]
    autos = [origin.add(f"/auto/{i}.bin", b) for i, b in enumerate(bodies)]
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "m.yaml").write_text(
        "artifacts:\n"
        + "".join(f"  - {u}\n" for u in listed)
        + "auto:\n  allow_hosts: [127.0.0.1]\n"
        + f"store:\n  budget: {23 * 256}K\n"  # the listed three and twenty auto-fills
    )
    r = run_withcache("sync", "-q", "--data", str(cache.data), "-m", str(manifests))
    assert r.returncode == 0, r.stderr
    w = Watcher(cache.data, cache.access_log, "--auto", "-m", str(manifests), "--index-every", "0")

    def target(url: str) -> str:
        return cache.url + keys.cache_path(keys.normalize(url))

    def fill(i: int) -> None:
        assert requests.head(target(autos[i])).status_code == 404  # the miss
        wait_for(lambda: requests.head(target(autos[i])).status_code == 200, 20)
        assert requests.get(target(autos[i])).content == bodies[i]  # and a hit

    try:
        wait_for(lambda: checkpoint(cache.data, cache.access_log) is not None, 20)
        for i in range(20):  # phase A: up to the budget exactly, nothing evicted
            fill(i)
        assert len(records(cache.data)) == 23
        time.sleep(1.1)  # the log's clock has whole seconds: keep the phases apart
        for i in range(10):  # phase B: a0..a9 hit again
            assert requests.get(target(autos[i])).content == bodies[i]
        wait_for(lambda: caught_up(cache), 20)
        time.sleep(1.1)
        for i in range(20, 30):  # phase C: each fill makes room for itself
            fill(i)
        wait_for(lambda: caught_up(cache), 20)
    finally:
        w.stop()

    held = records(cache.data)
    keep = {keys.normalize(u) for u in [*listed, *autos[:10], *autos[20:]]}
    gone = {keys.normalize(u) for u in autos[10:20]}
    assert set(held) == keep
    lay = Layout(cache.data)
    for key in gone:  # not on disk; nginx answers 404 or, from its open-file cache, every byte
        assert tree.stat_blob(lay, key) is None
        i = autos.index(key)
        answer = requests.get(target(key))
        assert answer.status_code == 404 or answer.content == bodies[i]
    for i, u in enumerate(listed):
        assert requests.get(target(u)).content == bytes([i]) * size
    du = json.loads(run_withcache("du", "--json", "--data", str(cache.data)).stdout)
    assert du["bytes"] <= 23 * size and du["evictions"] == 10
    rep = run_withcache("report", "--format", "json", "--data", str(cache.data), "--peek")
    evicted = json.loads(rep.stdout)["evicted"]
    assert sorted(e["url"] for e in evicted) == sorted(gone)
    text = run_withcache("report", "--data", str(cache.data)).stdout
    assert "Evicted by the disk budget (10," in text


def test_a_client_streaming_an_artifact_while_it_is_evicted_gets_every_byte(
    cache: Cache,
) -> None:
    body = os.urandom(48 * MiB)  # far more than loopback's socket buffers hold
    key = plant(cache.layout, "https://dl.example/big.iso", body, source="auto")
    url = cache.url + keys.cache_path(key)
    with requests.get(url, stream=True, timeout=30) as r:
        assert r.status_code == 200
        chunks = r.iter_content(64 * KiB)
        got = bytearray(next(chunks))
        done = budget.enforce(cache.layout, budget.Limits(budget=1))  # evict it now
        assert [e.key for e in done.evicted] == [key]
        assert tree.stat_blob(cache.layout, key) is None
        assert len(got) < len(body)  # the transfer was under way
        for chunk in chunks:
            got += chunk
    assert len(got) == len(body) and sha(bytes(got)) == sha(body)
    again = requests.get(url, timeout=30)  # open_file_cache may still hold the descriptor
    assert again.status_code == 404 or sha(again.content) == sha(body)


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs: a data dir whose free space is real."""
    tmp_path.chmod(0o755)  # nginx's www-data worker must get through
    with tmpfs(tmp_path / "tiny", "size=64m,mode=0755") as mnt:
        yield mnt


def free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_min_free_on_a_small_disk_refuses_stops_and_keeps_serving(
    tiny_fs: Path, origin: Origin, tmp_path: Path
) -> None:
    bodies: dict[str, bytes] = {}
    for i in range(2):
        body = os.urandom(8 * MiB)
        bodies[origin.add(f"/first/{i}.bin", body)] = body
    first = list(bodies)
    more = [origin.add(f"/more/{i}.bin", os.urandom(8 * MiB)) for i in range(3)]
    endless = origin.add("/forever", b"e" * 4096, endless=True)
    m = tmp_path / "m.yaml"
    store_section = "store:\n  min_free: 16M\n"

    def write_manifest(urls: list[str]) -> None:
        m.write_text("artifacts:\n" + "".join(f"  - {u}\n" for u in urls) + store_section)

    data = tiny_fs / "data"
    write_manifest(first)
    r = run_withcache("sync", "-q", "--data", str(data), "-m", str(m))
    assert r.returncode == 0, r.stderr
    cache = start_nginx(data)
    try:
        ballast = tiny_fs / "ballast"
        ballast.write_bytes(b"\0" * (28 * MiB))  # 64 - 16 - 28: under 8 MiB above min_free
        write_manifest([*first, *more])
        r = run_withcache("sync", "--data", str(data), "-m", str(m))
        assert r.returncode == 1
        errors = [x for x in r.stderr.splitlines() if x.startswith("withcache: error: fetch")]
        assert len(errors) == 3 and all("refused: 8.0 MiB would leave" in x for x in errors)
        assert "under min_free 16.0 MiB" in r.stderr
        assert "3 of 5 downloads failed" in r.stderr
        for u in first:  # what was placed before is still served, whole
            got = requests.get(cache.url + keys.cache_path(keys.normalize(u)), timeout=10)
            assert got.status_code == 200 and sha(got.content) == sha(bodies[u])

        before = free(tiny_fs)
        write_manifest([*first, endless])
        started = time.monotonic()
        r = run_withcache("sync", "--data", str(data), "-m", str(m))
        assert r.returncode == 1 and time.monotonic() - started < 60
        assert "down to its min_free of 16.0 MiB" in r.stderr, r.stderr
        wrote = re.search(r"stopped after ([0-9.]+) MiB", r.stderr)
        assert wrote and float(wrote.group(1)) * MiB <= before - 16 * MiB + MiB  # bounded
        assert free(tiny_fs) >= before - MiB  # and its partial was dropped

        ballast.unlink()  # space freed: the next sync completes
        write_manifest([*first, *more])
        r = run_withcache("sync", "-q", "--data", str(data), "-m", str(m))
        assert r.returncode == 0, r.stderr
        for u in more:
            got = requests.get(cache.url + keys.cache_path(keys.normalize(u)), timeout=10)
            assert got.status_code == 200 and len(got.content) == 8 * MiB
    finally:
        stop_nginx(cache.proc)


def test_an_endless_body_stops_at_the_store_max_size(tmp_path: Path, origin: Origin) -> None:
    url = origin.add("/forever", b"x" * 4096, endless=True)
    m = tmp_path / "m.yaml"
    m.write_text(f"artifacts:\n  - {url}\nstore:\n  max_size: 6M\n")
    data = tmp_path / "d"
    r = run_withcache("sync", "--data", str(data), "-m", str(m))
    assert r.returncode == 1
    assert "stopped at 6.0 MiB" in r.stderr and "max_size" in r.stderr
    written = sum(p.stat().st_size for p in (data / "state" / "partial").glob("*.part"))
    assert written <= 7 * MiB  # max_size and at most one more 1 MiB read
    # the command line's --max-size wins over the section's
    r = run_withcache("sync", "--data", str(data), "-m", str(m), "--max-size", "3M")
    assert r.returncode == 1 and "stopped at 3.0 MiB" in r.stderr
