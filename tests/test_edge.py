"""Edge caches: nginx's proxy_cache in front of a center, all real nginx on loopback.

A center (`withcache serve` over a synced tree plus a 200 MB artifact), edges started
with the real `withcache serve --edge`, and the center's own access log as the count
of what reached it."""

from __future__ import annotations

import http.client
import json
import math
import os
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.conftest import (
    Cache,
    plant,
    run_withcache,
    start_nginx,
    stop_nginx,
)
from tests.origin import Origin
from tests.trees import JSON_TYPE, Tree, listed, sha256
from tests.watcher import db
from withcache import accesslog, keys
from withcache.layout import Layout

BIG = 200 << 20
SLICE = 8 << 20
BIG_URL = "https://vendor.example/cuda/cuda_12.6.3_linux.run"
PIP_ACCEPT = f"{JSON_TYPE}, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"

needs_nginx = pytest.mark.skipif(
    not shutil.which("nginx") and not Path("/usr/sbin/nginx").exists(), reason="no nginx"
)


@dataclass
class Center:
    cache: Cache
    tree: Tree
    big: bytes
    big_path: str

    def requests_for(self, path: str, at_least: int = 0) -> list[dict[str, object]]:
        """The center's logged requests for `path`; with `at_least`, wait for that many
        (nginx logs a request just after answering it)."""
        lines = self.cache.log_lines(at_least, where=lambda line: f'"uri":"{path}' in line)
        return [e for e in map(json.loads, lines) if str(e["uri"]).split("?")[0] == path]


@pytest.fixture(scope="module")
def center(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Center]:
    tmp = tmp_path_factory.mktemp("edge")
    tmp.chmod(0o755)
    origin = Origin()
    try:
        tree = Tree(tmp, origin)
        for i in range(3):
            tree.add_artifact(f"tool-{i}.tar.gz", 30_000 * (i + 1))
        tree.add_wheel("wct-alpha", "1.0")
        tree.sync()
    finally:
        origin.close()
    big = os.urandom(BIG)
    plant(Layout(tree.data), BIG_URL, big)
    cache = start_nginx(tree.data)
    try:
        yield Center(cache, tree, big, keys.cache_path(keys.normalize(BIG_URL)))
    finally:
        stop_nginx(cache.proc)


def start_edge(data: Path, *centers: str, extra: tuple[str, ...] = ()) -> Cache:
    """`withcache serve --edge` on a free loopback port, up when /healthz answers."""
    edges = [arg for c in centers for arg in ("--edge", c)]
    return start_nginx(data, None, "--min-free", "10m", *edges, *extra)


@pytest.fixture
def edge(center: Center, tmp_path: Path) -> Iterator[Cache]:
    """A cold edge of the center."""
    tmp_path.chmod(0o755)
    e = start_edge(tmp_path / "edge", center.cache.url)
    yield e
    stop_nginx(e.proc)


def fetch_and_compare(url: str, expected: bytes, out: list[tuple[int, object]]) -> None:
    """GET url and compare the body with `expected` as it arrives (memcmp per MiB);
    append (status, True when every byte matched), or (0, the error)."""
    host, port = url.removeprefix("http://").split("/", 1)[0].split(":")
    path = "/" + url.removeprefix("http://").split("/", 1)[1]
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        buf = bytearray(1 << 20)
        off, same = 0, True
        while n := r.readinto(buf):
            same = same and expected[off : off + n] == (buf if n == len(buf) else buf[:n])
            off += n
        out.append((r.status, same and off == len(expected)))
    except (OSError, http.client.HTTPException) as exc:
        out.append((0, repr(exc)))
    finally:
        conn.close()


@needs_nginx
def test_100_first_requests_for_a_cold_200mb_file_make_one_fetch_per_slice(
    center: Center, edge: Cache
) -> None:
    before = len(center.requests_for(center.big_path))
    results: list[tuple[int, object]] = []
    threads = [
        threading.Thread(
            target=fetch_and_compare, args=(edge.url + center.big_path, center.big, results)
        )
        for _ in range(100)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert Counter(results) == {(200, True): 100}  # all 100 bodies are the artifact's
    slices = math.ceil(BIG / SLICE)
    upstream = center.requests_for(center.big_path, before + slices)[before:]
    ranges = Counter(str(e["range"]) for e in upstream)
    assert len(upstream) == slices, (ranges, edge_errors(edge))  # one GET per slice
    assert set(ranges.values()) == {1}
    assert {e["method"] for e in upstream} == {"GET"}
    assert {e["status"] for e in upstream} == {206}
    assert sum(int(str(e["bytes"])) for e in upstream) == BIG


def edge_errors(edge: Cache) -> str:
    log = edge.data / "run" / "error.log"
    return log.read_text()[-2000:] if log.exists() else ""


@needs_nginx
def test_a_1mb_range_from_a_cold_edge_fetches_one_slice(center: Center, edge: Cache) -> None:
    before = len(center.requests_for(center.big_path))
    start = 150 << 20
    r = requests.get(
        edge.url + center.big_path,
        headers={"Range": f"bytes={start}-{start + (1 << 20) - 1}"},
        timeout=30,
    )
    assert r.status_code == 206
    assert r.content == center.big[start : start + (1 << 20)]
    assert r.headers["Content-Range"] == f"bytes {start}-{start + (1 << 20) - 1}/{BIG}"
    upstream = center.requests_for(center.big_path, before + 1)[before:]
    assert len(upstream) == 1 and int(str(upstream[0]["bytes"])) == SLICE
    assert upstream[0]["range"] == "bytes=150994944-159383551"  # the slice holding 150 MiB


@needs_nginx
def test_a_miss_reaches_the_center_and_a_new_sync_shows_within_seconds(
    center: Center, edge: Cache
) -> None:
    url = f"https://vendor.example/new-{os.getpid()}.bin"
    path = keys.cache_path(keys.normalize(url))
    r = requests.head(edge.url + path, headers={"User-Agent": "withcache-probe"}, timeout=5)
    assert r.status_code == 404
    seen = center.requests_for(path, 1)
    assert [(e["status"], e["ua"]) for e in seen] == [(404, "withcache-probe")]
    assert accesslog.parse_line(center.cache.log_lines()[-1]).__class__ is accesslog.Miss
    plant(Layout(center.tree.data), url, b"synced just now")
    t0 = time.monotonic()
    while requests.get(edge.url + path, timeout=5).status_code == 404:
        assert time.monotonic() - t0 < 5, "a 404 was remembered for more than seconds"
        time.sleep(0.2)
    assert requests.get(edge.url + path, timeout=5).content == b"synced just now"


@needs_nginx
def test_pages_keep_their_format_per_accept_and_are_cached(center: Center, edge: Cache) -> None:
    for _ in range(2):
        j = requests.get(edge.url + "/simple/", headers={"Accept": PIP_ACCEPT}, timeout=5)
        h = requests.get(edge.url + "/simple/", headers={"Accept": "text/html"}, timeout=5)
        b = requests.get(edge.url + "/simple/wct-alpha/", timeout=5)
        assert (
            j.headers["Content-Type"] == JSON_TYPE
            and "wct-alpha" in j.json()["projects"][0]["name"]
        )
        assert h.headers["Content-Type"].startswith("text/html") and "wct-alpha" in h.text
        assert b.headers["Content-Type"].startswith("text/html")
    assert j.headers["X-Cache-Status"] == "HIT" and h.headers["X-Cache-Status"] == "HIT"
    assert requests.get(edge.url + "/catalog.json", timeout=5).json()["count"] >= 4
    r = requests.get(edge.url + "/simple/WCT_Alpha/", allow_redirects=False, timeout=5)
    assert r.status_code in (200, 301)
    # every file a page of the edge lists is served by the edge with its bytes
    for f in listed(edge.url):
        body = requests.get(edge.url + f.path, timeout=30).content
        if f.sha256:
            assert sha256(body) == f.sha256


@needs_nginx
def test_read_only_health_and_metrics(center: Center, edge: Cache) -> None:
    assert requests.post(edge.url + "/b/x/y", data=b"x", timeout=5).status_code == 405
    assert requests.put(edge.url + "/simple/", data=b"x", timeout=5).status_code == 405
    assert requests.get(edge.url + "/healthz", timeout=5).text == "ok\n"
    # the center's metrics are not the edge's: not proxied (the edge has none yet)
    assert requests.get(center.cache.url + "/metrics", timeout=5).status_code == 200
    assert requests.get(edge.url + "/metrics", timeout=5).status_code == 404


@needs_nginx
def test_the_edge_log_feeds_a_watcher_of_its_own(center: Center, edge: Cache) -> None:
    url = "https://vendor.example/edge-only-miss.bin"
    requests.head(edge.url + keys.cache_path(keys.normalize(url)), timeout=5)
    requests.get(edge.url + center.big_path, headers={"Range": "bytes=0-9"}, timeout=5)
    lines = (edge.data / "log" / "access.log").read_text().splitlines()
    assert lines and all(
        accesslog._EXACT.fullmatch(line)
        for line in lines  # our format, byte for byte
    )
    r = run_withcache("watch", "--once", "--data", str(edge.data))
    assert r.returncode == 0, r.stderr
    with db(edge.data) as conn:
        assert conn.execute("SELECT url FROM misses").fetchall() == [(url,)]
        assert conn.execute("SELECT count FROM hits").fetchall() == [(1,)]
    # an edge holds no tree: its www/ has only the metrics its own watcher writes
    www = edge.data / "www"
    assert (sorted(p.name for p in www.iterdir()) if www.exists() else []) in ([], ["metrics"])
    if (www / "metrics").exists():
        r = requests.get(edge.url + "/metrics", timeout=5)
        assert r.status_code == 200 and r.content == (www / "metrics").read_bytes()


@needs_nginx
def test_credentials_and_no_store_are_never_cached(tmp_path: Path, origin: Origin) -> None:
    """The edge in front of a plain origin that plays a center with a private index."""
    tmp_path.chmod(0o755)
    blob = "/b/cHJpdmF0ZQ/private.whl"
    origin.add(blob, b"private bytes")
    origin.add("/team/simple/", b"<a>page</a>", headers={"Cache-Control": "private"})
    origin.add("/simple/nostore/", b"<a>x</a>", headers={"Cache-Control": "no-store"})
    e = start_edge(tmp_path / "edge", origin.base)
    try:
        auth = {"Authorization": "Basic Y2k6c2VjcmV0"}
        for _ in range(2):
            r = requests.get(e.url + blob, headers=auth, timeout=5)
            assert r.content == b"private bytes" and r.headers["X-Cache-Status"] == "BYPASS"
        assert len(origin.seen(blob)) == 2  # each authenticated request reached the center
        assert all(
            s.headers.get("Authorization") == auth["Authorization"] for s in origin.seen(blob)
        )
        requests.get(e.url + blob, timeout=5)  # without credentials: not served from them
        assert len(origin.seen(blob)) == 3
        for path in ("/team/simple/", "/simple/nostore/"):
            for _ in range(2):
                assert requests.get(e.url + path, timeout=5).status_code == 200
            assert len(origin.seen(path)) == 2, path
    finally:
        stop_nginx(e.proc)


@needs_nginx
def test_a_mirror_fall_through_is_never_kept_at_the_edge(tmp_path: Path, origin: Origin) -> None:
    """The center streams an unverified file from a mirror's source; the edge passes it
    on and keeps nothing, so the next request reaches the center (and the verified
    file once auto-fill placed it)."""
    from tests.mirrorkit import mirror_manifest

    tmp_path.chmod(0o755)
    body = os.urandom(300_000)
    origin.add("/pub/pool/f.tgz", body)
    m = mirror_manifest(tmp_path / "m.yaml", "lab", [f"{origin.base}/pub/"], [], fallthrough=True)
    data = Layout(tmp_path / "center").ensure()
    center = start_nginx(data.root, None, "-m", str(m))
    e = start_edge(tmp_path / "edge", center.url)
    try:
        for _ in range(2):
            r = requests.get(e.url + "/m/lab/pool/f.tgz", timeout=10)
            assert r.status_code == 200 and r.content == body
            assert r.headers["Cache-Control"] == "no-store"
            assert r.headers["X-Cache-Status"] == "MISS"
        assert len(origin.seen("/pub/pool/f.tgz", "GET")) == 2
    finally:
        stop_nginx(e.proc)
        stop_nginx(center.proc)


@needs_nginx
def test_without_the_center_the_edge_serves_what_it_holds_and_the_replica_everything(
    tmp_path: Path, origin: Origin
) -> None:
    tmp_path.chmod(0o755)
    tree = Tree(tmp_path, origin)
    for i in range(3):
        tree.add_artifact(f"f-{i}.bin", 100_000)
    tree.add_wheel("wct-alpha", "1.0")
    tree.sync()
    r = run_withcache("replicate", "--data", str(tree.data), str(tmp_path / "replica"))
    assert r.returncode == 0, r.stderr
    center = start_nginx(tree.data)
    replica = start_nginx(tmp_path / "replica")
    edge = start_edge(tmp_path / "edge", center.url)
    backed = start_edge(tmp_path / "backed", center.url, replica.url)
    try:
        files = listed(center.url)
        held = [f for f in files if f.sha256][:2]  # the edges hold these two
        for f in held:
            for e in (edge, backed):
                assert requests.get(e.url + f.path, timeout=10).status_code == 200
        catalog = requests.get(edge.url + "/catalog.json", timeout=5)
        assert catalog.status_code == 200
        cached_at = time.monotonic()
        stop_nginx(center.proc)
        for f in held:
            r = requests.get(edge.url + f.path, timeout=10)
            assert r.status_code == 200 and sha256(r.content) == f.sha256
        cold = next(f for f in files if f.sha256 and f not in held)
        t0 = time.monotonic()
        assert requests.get(edge.url + cold.path, timeout=10).status_code in (502, 504)
        assert time.monotonic() - t0 < 4  # no long hang: connect timeout 3 s
        # the replica serves everything; an edge backed by it, too
        for f in listed(replica.url):
            r = requests.get(replica.url + f.path, timeout=10)
            assert r.status_code == 200 and (not f.sha256 or sha256(r.content) == f.sha256)
        r = requests.get(backed.url + cold.path, timeout=10)
        assert r.status_code == 200 and sha256(r.content) == cold.sha256
        # a page past its 10 s (nginx counts whole seconds) is still served while the
        # center is away
        time.sleep(max(0.0, cached_at + 11.5 - time.monotonic()))
        r = requests.get(edge.url + "/catalog.json", timeout=10)
        assert r.status_code == 200 and r.content == catalog.content
        assert r.headers["X-Cache-Status"] in ("STALE", "UPDATING")
    finally:
        for c in (backed, edge, replica, center):
            stop_nginx(c.proc)


def test_nginx_config_edge_is_a_complete_config(tmp_path: Path) -> None:
    r = run_withcache(
        "nginx-config",
        "--edge",
        "http://center.example:8080",
        "--data",
        str(tmp_path / "e"),
        "--listen",
        "8081",
        "--max-size",
        "50g",
        "--min-free",
        "2g",
    )
    assert r.returncode == 0, r.stderr
    conf = r.stdout
    for directive in (
        "proxy_cache_path",
        "max_size=50g",
        "min_free=2g",
        "slice 8m;",
        "proxy_cache_lock on;",
        "proxy_cache_use_stale error timeout",
        "proxy_cache_valid 404 2s;",
        "proxy_cache_valid 200 206 365d;",
        "proxy_cache_revalidate on;",
        "proxy_cache_bypass $http_authorization;",
        "access_log",
        "server center.example:8080;",
        "proxy_set_header Host center.example:8080;",
    ):
        assert directive in conf, directive
    assert conf.count("log_format withcache") == 1  # http.conf.j2's, not a copy
    if not shutil.which("nginx") and not Path("/usr/sbin/nginx").exists():
        return
    # a system nginx includes it inside http {}: check it the way nginx -t would
    run = tmp_path / "sys"
    run.mkdir()
    (tmp_path / "e" / "log").mkdir(parents=True)  # the README's `install -d` step
    main = run / "nginx.conf"
    main.write_text(
        f"pid {run}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
        f"http {{\n proxy_temp_path {run}/proxy;\n include {run}/edge.conf;\n}}\n"
    )
    (run / "edge.conf").write_text(
        conf.replace("server center.example:8080;", "server 127.0.0.1:9;")
    )
    proc = subprocess.run(
        ["nginx", "-t", "-q", "-p", f"{run}/", "-e", "stderr", "-c", str(main)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--edge", "ftp://center"], "must start with http:// or https://"),
        (["--edge", "http://ci:secret@center"], "credentials do not belong"),
        (["--edge", "http://center/sub/"], "no path or query"),
        (["--edge", "http://cen;ter"], "plain URL"),
        (["--edge", "http://center:99999"], "not a URL"),
        (["--edge", "http://a", "--edge", "https://b"], "must all be http or all https"),
        (["--edge", "http://a", "--max-size", "10x"], "--max-size wants a size"),
        (["--edge", "http://a", "--slice", "1g"], "--slice wants a size"),
        (["--edge", "http://a", "--aio-threads"], "--aio-threads is for serving a tree"),
    ],
)
def test_bad_edge_options_are_refused_and_nothing_is_written(
    tmp_path: Path, argv: list[str], message: str
) -> None:
    data = tmp_path / "e"
    for command in ("serve", "nginx-config"):
        r = run_withcache(command, "--data", str(data), *argv)
        assert r.returncode == 2, r.stderr
        assert message in r.stderr
        assert not data.exists()
