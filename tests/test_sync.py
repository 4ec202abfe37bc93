"""sync against a real loopback origin: bytes, paths, resume, failures, crashes."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import LONG, ROOT, key_vectors, run_withcache, withcache_cmd
from tests.origin import Origin
from withcache import keys, store
from withcache.cli import main
from withcache.layout import Layout


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def manifest(tmp: Path, lines: list[str], name: str = "m.yaml") -> Path:
    p = tmp / name
    p.write_text("# test manifest\nartifacts:\n" + "".join(f"  {line}\n" for line in lines))
    return p


def sync(data: Layout, m: Path, *extra: str) -> int:
    return main(["sync", "--data", str(data.root), "-m", str(m), "-q", *extra])


def blob(data: Layout, url: str, keep_query: bool = False) -> Path:
    return data.www / keys.blob_relpath(keys.normalize(url, keep_query))


def records(data: Layout) -> dict[str, store.Artifact]:
    conn = store.connect(data.db)
    try:
        return store.artifacts(conn)
    finally:
        conn.close()


def assert_tree_matches_records(data: Layout) -> int:
    """Every blob in www/b/ hashes to its record; return how many there are."""
    recs = records(data)
    n = 0
    for path in (data.www / "b").rglob(keys.BLOB_FILE):
        rel = path.parent.relative_to(data.www / "b")
        key = keys.decode_token(str(rel).replace("/", ""))
        assert key in recs, f"{path} has no record"
        assert sha(path.read_bytes()) == recs[key].sha256, f"{path} differs from its record"
        n += 1
    return n


def test_twenty_artifacts_land_at_vector_paths_and_resync_is_free(
    origin: Origin, data: Layout, tmp_path: Path
) -> None:
    bodies: dict[str, bytes] = {}
    big = os.urandom(1 << 20) * 55  # 55 MiB: more than 50 MB, cheap to make
    for i in range(20):
        body = big + bytes([i]) if i < 2 else os.urandom(1000 + i * 7919)
        bodies[origin.add(f"/pkg/file-{i}.bin", body)] = body
    urls = list(bodies)
    lines = [f"- {u}" for u in urls[1:]] + [
        f"- url: {urls[0]}",
        f"  sha256: {sha(bodies[urls[0]])}",
    ]
    m = manifest(tmp_path, lines)
    assert sync(data, m, "-j", "4") == 0
    for url, body in bodies.items():
        path = blob(data, url)
        assert path.read_bytes() == body
        assert path.stat().st_mode & 0o777 == 0o644
    assert not list(data.partial.iterdir())
    index = (data.www / "index.html").read_text()
    assert all(keys.cache_path(keys.normalize(u)) in index for u in urls)

    before = len(origin.requests)
    assert sync(data, m) == 0
    assert len(origin.requests) == before, "a second sync must not touch the origin"


def test_one_connection_per_job_however_many_files(
    origin: Origin, data: Layout, tmp_path: Path
) -> None:
    """Files are fetched over kept-alive connections: 30 files with 2 jobs open 2
    connections to the origin, not 30 (over https, 30 handshakes)."""
    bodies = {origin.add(f"/many/f{i}.bin", os.urandom(20_000 + i)): i for i in range(30)}
    m = manifest(tmp_path, [f"- {u}" for u in bodies])
    assert sync(data, m, "-j", "2") == 0
    gets = [s for s in origin.requests if s.path.startswith("/many/")]
    assert len(gets) == 30
    assert len({s.client for s in gets}) <= 2, sorted({s.client for s in gets})
    assert assert_tree_matches_records(data) == 30


def test_cache_paths_match_the_shared_vectors(origin: Origin, data: Layout, tmp_path: Path) -> None:
    """The tree layout is the contract: a vector's cache path names the synced file."""
    url = origin.add("/pkg/a.whl", b"wheel")
    # the vector for http://127.0.0.1:8000/pkg/a.whl, re-based on the origin's port
    (vector,) = [v for v in key_vectors() if v[1] == "http://127.0.0.1:8000/pkg/a.whl"]
    assert keys.cache_path(keys.normalize(vector[1])) == vector[2]
    m = manifest(tmp_path, [f"- {url}"])
    assert sync(data, m) == 0
    expected_dir = data.www / "b" / keys.token(f"http://127.0.0.1:{origin.port}/pkg/a.whl")
    assert (expected_dir / keys.BLOB_FILE).read_bytes() == b"wheel"


def test_dropped_connection_reported_then_resumed_with_range(
    origin: Origin, data: Layout, tmp_path: Path
) -> None:
    body = os.urandom(4 << 20)
    url = origin.add("/big.iso", body, drop_after=3 << 20, drop_times=1)
    m = manifest(tmp_path, [f"- {url}"])
    r = run_withcache("sync", "--data", str(data.root), "-m", str(m), "--retries", "0")
    assert r.returncode == 1
    assert "connection broken after" in r.stderr and url in r.stderr
    assert not blob(data, url).exists()

    r = run_withcache("sync", "--data", str(data.root), "-m", str(m), "--retries", "0")
    assert r.returncode == 0, r.stderr
    last = origin.seen("/big.iso")[-1]
    assert last.headers.get("Range", "").startswith("bytes=")
    assert int(last.headers["Range"][6:-1]) > 0
    assert blob(data, url).read_bytes() == body
    assert "resumed at" in r.stderr


def test_drop_within_one_run_is_retried_with_range(
    origin: Origin, data: Layout, tmp_path: Path
) -> None:
    body = os.urandom(2 << 20)
    url = origin.add("/f.bin", body, drop_after=1 << 20, drop_times=1)
    m = manifest(tmp_path, [f"- {url}"])
    assert sync(data, m, "--retries", "2") == 0
    assert [s.headers.get("Range") for s in origin.seen("/f.bin")] == [None, "bytes=1048576-"]
    assert blob(data, url).read_bytes() == body


def test_resume_restarts_when_origin_changed(origin: Origin, data: Layout, tmp_path: Path) -> None:
    old = os.urandom(1 << 20)
    url = origin.add("/v.bin", old, drop_after=500_000, drop_times=1)
    m = manifest(tmp_path, [f"- {url}"])
    assert sync(data, m, "--retries", "0") == 1
    new = os.urandom(1 << 20)
    origin.add("/v.bin", new)  # new ETag: If-Range must make the origin send it whole
    assert sync(data, m, "--retries", "0") == 0
    assert blob(data, url).read_bytes() == new


def test_pinned_mismatch_fails_and_nothing_is_served(
    origin: Origin, data: Layout, tmp_path: Path
) -> None:
    good = origin.add("/good.bin", b"good")
    bad = origin.add("/evil.bin", b"tampered bytes")
    m = manifest(tmp_path, [f"- {good}", f"- url: {bad}", f"  sha256: {sha(b'expected')}"])
    r = run_withcache("sync", "--data", str(data.root), "-m", str(m))
    assert r.returncode == 1
    assert f"fetch {bad} ({m}:4): sha256 mismatch" in r.stderr
    assert "1 of 2 downloads failed" in r.stderr
    assert not blob(data, bad).exists()
    assert not list(data.partial.glob("*.part"))
    assert blob(data, good).read_bytes() == b"good"
    assert keys.normalize(bad) not in records(data)


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({"status": 404}, "HTTP 404"),
        ({"status": 500}, "HTTP 500"),
        ({"delay": 3.0}, "Read timed out"),
    ],
)
def test_one_bad_origin_entry_does_not_stop_the_others(
    origin: Origin, data: Layout, tmp_path: Path, opts: dict[str, object], message: str
) -> None:
    ok = [origin.add(f"/ok{i}", f"ok{i}".encode()) for i in range(3)]
    bad = origin.add("/bad", b"x" * 10, **opts)
    m = manifest(tmp_path, [f"- {u}" for u in [*ok, bad]])
    r = run_withcache(
        "sync", "--data", str(data.root), "-m", str(m), "--retries", "0", "--timeout", "1"
    )
    assert r.returncode == 1
    assert f"withcache: error: fetch {bad} ({m}:6): " in r.stderr and message in r.stderr
    assert all(blob(data, u).exists() for u in ok)
    assert not blob(data, bad).exists()


def test_5xx_is_retried(origin: Origin, data: Layout, tmp_path: Path) -> None:
    url = origin.add("/flaky", b"x", status=503)
    m = manifest(tmp_path, [f"- {url}"])
    assert sync(data, m, "--retries", "1") == 1
    assert len(origin.seen("/flaky")) == 2


def test_long_url_syncs_to_split_path(origin: Origin, data: Layout, tmp_path: Path) -> None:
    path = "/firmware/" + "/".join(f"segment{i:02d}" for i in range(40)) + "/fw.bin"
    url = origin.add(path, b"firmware")
    assert len(url) > 400
    m = manifest(tmp_path, [f"- {url}"])
    assert sync(data, m) == 0
    cache_path = keys.cache_path(keys.normalize(url))
    segs = cache_path.split("/")[2:-1]
    assert len(segs) >= 2 and all(len(s) == 255 for s in segs[:-1])
    assert (data.www / "b" / Path(*segs) / keys.BLOB_FILE).read_bytes() == b"firmware"


def test_prune_removes_only_keys_that_left(origin: Origin, data: Layout, tmp_path: Path) -> None:
    a, b = origin.add("/a", b"a"), origin.add("/b", b"b")
    assert sync(data, manifest(tmp_path, [f"- {a}", f"- {b}"])) == 0
    m = manifest(tmp_path, [f"- {a}"])
    assert sync(data, m) == 0
    assert blob(data, b).exists(), "without --prune nothing is removed"
    assert sync(data, m, "--prune") == 0
    assert blob(data, a).exists() and not blob(data, b).exists()
    assert not blob(data, b).parent.exists()
    assert set(records(data)) == {keys.normalize(a)}


def test_refresh_revalidates_and_refetches_only_changes(
    origin: Origin, data: Layout, tmp_path: Path
) -> None:
    a, b = origin.add("/a", b"a1"), origin.add("/b", b"b1")
    m = manifest(tmp_path, [f"- {a}", f"- {b}"])
    assert sync(data, m) == 0
    origin.add("/b", b"b2-changed")
    n = len(origin.requests)
    assert sync(data, m, "--refresh") == 0
    seen = origin.requests[n:]
    assert {s.path for s in seen} == {"/a", "/b"}
    assert all("If-None-Match" in s.headers for s in seen)
    assert blob(data, a).read_bytes() == b"a1"
    assert blob(data, b).read_bytes() == b"b2-changed"
    assert_tree_matches_records(data)


def test_deleted_blob_is_fetched_again(origin: Origin, data: Layout, tmp_path: Path) -> None:
    url = origin.add("/a", b"abc")
    m = manifest(tmp_path, [f"- {url}"])
    assert sync(data, m) == 0
    blob(data, url).unlink()
    assert sync(data, m) == 0
    assert blob(data, url).read_bytes() == b"abc"


def test_dry_run_shows_plan_with_sizes_and_fetches_nothing(
    origin: Origin, data: Layout, tmp_path: Path
) -> None:
    a = origin.add("/a.bin", b"x" * 2048)
    gone = origin.add("/gone.bin", b"g")
    assert sync(data, manifest(tmp_path, [f"- {gone}"])) == 0
    m = manifest(tmp_path, [f"- {a}"])
    r = run_withcache("sync", "--data", str(data.root), "-m", str(m), "--dry-run", "--prune")
    assert r.returncode == 0
    assert f"fetch  {a}  (2.0 KiB, new)" in r.stdout
    assert f"prune  {gone}  (1 B)" in r.stdout
    assert not origin.seen("/a.bin", "GET")
    assert blob(data, gone).exists()


def test_a_dry_run_asks_its_sizes_over_kept_alive_connections(
    origin: Origin, data: Layout, tmp_path: Path
) -> None:
    """The dry run's HEADs reuse one connection per thread (8 at most), as downloads
    do: 30 entries do not open 30 connections."""
    urls = [origin.add(f"/sizes/f{i}.bin", b"s" * (100 + i)) for i in range(30)]
    m = manifest(tmp_path, [f"- {u}" for u in urls])
    r = run_withcache("sync", "--data", str(data.root), "-m", str(m), "--dry-run")
    assert r.returncode == 0, r.stderr
    assert f"fetch  {urls[29]}  (129 B, new)" in r.stdout
    heads = [s for s in origin.requests if s.path.startswith("/sizes/")]
    assert len(heads) == 30 and {s.method for s in heads} == {"HEAD"}
    assert len({s.client for s in heads}) <= 8, sorted({s.client for s in heads})


def test_second_sync_on_same_data_dir_is_refused_clearly(
    origin: Origin, data: Layout, tmp_path: Path
) -> None:
    url = origin.add("/slow.bin", os.urandom(1 << 20), slow=0.2)
    m = manifest(tmp_path, [f"- {url}"])
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    first = subprocess.Popen(
        withcache_cmd("sync", "--data", str(data.root), "-m", str(m), "-q"), env=env
    )
    try:
        deadline = time.monotonic() + 10
        while not origin.seen("/slow.bin") and time.monotonic() < deadline:
            time.sleep(0.05)
        r = run_withcache("sync", "--data", str(data.root), "-m", str(m))
        assert r.returncode == 1
        assert f"another sync is running on {data.root} (pid {first.pid})" in r.stderr
    finally:
        first.kill()
        first.wait()


def test_kill_9_at_random_moments_never_leaves_a_bad_file(
    origin: Origin, data: Layout, tmp_path: Path
) -> None:
    rounds = 60 if LONG else 20
    rng = random.Random(1234)
    bodies = {
        origin.add(f"/k/{i}.bin", os.urandom((i + 1) * 700_000), slow=0.002): i for i in range(6)
    }
    m = manifest(tmp_path, [f"- {u}" for u in bodies])
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = withcache_cmd("sync", "--data", str(data.root), "-m", str(m), "-q", "-j", "3")
    for _ in range(rounds):
        proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.05, 0.9))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert_tree_matches_records(data)
    r = run_withcache("sync", "--data", str(data.root), "-m", str(m))
    assert r.returncode == 0, r.stderr
    assert assert_tree_matches_records(data) == len(bodies)


def test_ctrl_c_stops_at_once_and_the_next_sync_resumes(
    origin: Origin, data: Layout, tmp_path: Path
) -> None:
    body = os.urandom(4 << 20)
    url = origin.add("/slow.iso", body, slow=0.05)  # ~3 s for the whole body
    m = manifest(tmp_path, [f"- {url}"])
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        withcache_cmd("sync", "--data", str(data.root), "-m", str(m)),
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # until the first bytes are on disk
        parts = list(data.partial.glob("*.part"))
        if parts and parts[0].stat().st_size > 0:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130
    assert time.monotonic() - t0 < 2
    assert "the next sync resumes" in err
    assert not blob(data, url).exists()
    assert sync(data, m) == 0
    assert origin.seen("/slow.iso")[-1].headers.get("Range", "").startswith("bytes=")
    assert blob(data, url).read_bytes() == body
