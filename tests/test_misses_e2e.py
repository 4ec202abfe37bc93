"""Through real nginx (`withcache serve`) and a real watcher process: what operators see."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import requests

from tests.conftest import Cache, plant, run_withcache
from tests.origin import Origin
from tests.test_watch import nginx_line
from tests.watcher import Watcher, checkpoint
from withcache import keys
from withcache.accesslog import _EXACT
from withcache.layout import Layout


def shim_path(url: str) -> str:
    """The cache path a shim requests for an origin URL as typed."""
    tok = keys.token(url)
    return f"/b/{'/'.join(keys.segments(tok))}/{keys.name(keys.normalize(url))}"


def misses_json(data: Path, *extra: str) -> list[dict[str, object]]:
    r = run_withcache("misses", "--json", "--data", str(data), *extra)
    assert r.returncode == 0, r.stderr
    rows: list[dict[str, object]] = json.loads(r.stdout)
    return rows


def wait_for(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def caught_up(cache: Cache, lines: int = 0) -> bool:
    """The watcher has read the whole log, and the log holds at least `lines`
    lines other than /healthz (nginx logs a request just after answering it)."""
    logged = cache.log_lines(where=lambda line: '"uri":"/healthz' not in line)
    if len(logged) < lines:
        return False
    st = cache.access_log.stat()
    return checkpoint(cache.data, cache.access_log) == (st.st_ino, st.st_size)


def test_a_head_and_a_get_for_an_uncached_url_are_listed_within_2_seconds(
    cache: Cache, watcher: Watcher
) -> None:
    url = "https://vendor.example/cuda/cuda_12.6.3_linux.run"
    target = cache.url + keys.cache_path(keys.normalize(url))
    assert requests.head(target, headers={"User-Agent": "curlwithcache/1"}).status_code == 404
    assert requests.get(target, headers={"User-Agent": "wget/1.21"}).status_code == 404
    asked = time.monotonic()
    while True:
        started = time.monotonic() - asked
        rows = misses_json(cache.data)
        if rows and rows[0]["count"] == 2:
            break
        assert started < 2.0, f"not listed {started:.2f}s after the requests: {rows}"
    assert started < 2.0
    (row,) = rows
    assert row["url"] == url and row["kind"] == "url"
    assert row["clients"] == 1 and row["last_ua"] == "wget/1.21"
    assert str(row["first_seen"]).endswith("Z") and row["first_seen"] <= row["last_seen"]


def test_hits_count_gets_not_head_probes_and_show_in_the_index(
    cache: Cache, watcher: Watcher
) -> None:
    body = b"x" * 10_000
    url = cache.plant("https://vendor.example/tool-1.2.tar.gz", body)
    odd = {"User-Agent": 'odd "agent" \\ \x01 \xe9'}  # nginx escapes these its own way
    assert requests.head(url, headers=odd).status_code == 200  # a shim's probe: not a hit
    assert requests.get(url).content == body
    r = requests.get(url, headers={"Range": "bytes=0-99"})
    assert r.status_code == 206
    wait_for(lambda: caught_up(cache, 3))
    lines = cache.access_log.read_bytes().decode("utf-8", "replace").splitlines()
    assert any('\\"agent\\"' in line for line in lines)
    for line in lines:  # nginx's own lines, escapes and all, take the parser's fast path
        assert _EXACT.fullmatch(line), line
    assert run_withcache("index", "--data", str(cache.data)).returncode == 0
    catalog = json.loads((cache.data / "www" / "catalog.json").read_text())
    (art,) = catalog["artifacts"]
    assert art["hits"] == 2 and art["last_hit"]
    rep = run_withcache("report", "--format", "json", "--peek", "--data", str(cache.data))
    assert rep.stdout == ""  # hits alone are no news
    assert misses_json(cache.data) == []


def test_a_missing_python_project_is_listed_with_a_requirements_line(
    cache: Cache, watcher: Watcher
) -> None:
    assert requests.get(cache.url + "/simple/Foo_Bar/").status_code == 404
    wait_for(lambda: caught_up(cache, 1))
    (row,) = misses_json(cache.data)
    assert (row["kind"], row["url"], row["requirement"]) == ("project", "foo-bar", "foo-bar")
    text = run_withcache("misses", "--data", str(cache.data)).stdout
    assert "requirements: [foo-bar]" in text
    snippet = run_withcache("misses", "--yaml", "--data", str(cache.data)).stdout
    assert "requirements: [foo-bar]" in snippet
    report = run_withcache("report", "--data", str(cache.data)).stdout
    assert "requirements: [foo-bar]" in report
    (cache.data / "www" / "simple" / "foo-bar").mkdir(parents=True)  # the index now has it
    assert misses_json(cache.data) == []


def test_a_miss_leaves_the_list_once_synced_or_dismissed(cache: Cache, watcher: Watcher) -> None:
    wanted = "https://vendor.example/wanted.iso"
    typo = "https://vendor.example/typo.iso"
    for u in (wanted, typo, wanted):
        assert requests.head(cache.url + shim_path(u)).status_code == 404
    wait_for(lambda: caught_up(cache, 3))
    assert [r["url"] for r in misses_json(cache.data)] == [wanted, typo]
    plant(Layout(cache.data), wanted, b"now cached")  # as `sync` places a manifest entry
    assert [r["url"] for r in misses_json(cache.data)] == [typo]
    d = run_withcache("misses", "dismiss", typo, "--data", str(cache.data))
    assert d.returncode == 0 and "dismissed" in d.stdout
    assert misses_json(cache.data) == []
    everything = {r["url"]: r["status"] for r in misses_json(cache.data, "--all")}
    assert everything == {wanted: "cached", typo: "dismissed"}
    assert requests.head(cache.url + shim_path(typo)).status_code == 404
    wait_for(lambda: caught_up(cache, 4))
    assert misses_json(cache.data) == []  # dismissed for good


def test_hostile_requests_and_lines_are_counted_and_escaped_in_html(
    cache: Cache, watcher: Watcher
) -> None:
    script = 'https://evil.example/"><script>alert(1)</script>.run'
    xss_ua = "<img src=x onerror=alert(2)>"
    assert (
        requests.get(cache.url + shim_path(script), headers={"User-Agent": xss_ua}).status_code
        == 404
    )
    for bad in ("javascript:alert(3)", "<script>alert(4)</script>"):
        assert requests.get(f"{cache.url}/b/{keys.token(bad)}/x").status_code == 404
    fd = os.open(cache.access_log, os.O_WRONLY | os.O_APPEND)
    try:  # lines nginx would never write, appended between its own
        for junk in (
            b"{not json\n",
            b"{" + b"a" * 1_000_000 + b"}\n",
            b"\0" * 5000 + b"\n",
            nginx_line(shim_path("https://vendor.example/\x1b[31mred.run"), ua=xss_ua),
        ):
            os.write(fd, junk)
    finally:
        os.close(fd)
    assert requests.get(cache.url + "/healthz").status_code == 200
    wait_for(lambda: caught_up(cache))
    assert watcher.proc.poll() is None
    urls = {r["url"] for r in misses_json(cache.data)}
    assert urls == {script, "https://vendor.example/\x1b[31mred.run"}  # the invalid are not misses

    text = run_withcache("report", "--peek", "--data", str(cache.data)).stdout
    assert "\x1b" not in text and "\\u001b[31mred.run" in text  # no terminal escapes
    assert run_withcache("index", "--data", str(cache.data)).returncode == 0
    rep = run_withcache("report", "--format", "html", "--data", str(cache.data))
    assert rep.returncode == 0
    for page in ("index.html", "report.html"):
        html = (cache.data / "www" / page).read_text()
        assert "<script>alert" not in html and "<img src=x" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(2)&gt;" in (cache.data / "www" / "report.html").read_text()
    assert 'href="report.html"' in (cache.data / "www" / "index.html").read_text()
    assert requests.get(cache.url + "/report.html").status_code == 200
    plain = run_withcache("misses", "--data", str(cache.data)).stdout
    assert "\x1b" not in plain


def test_auto_fill_fetches_allowed_hosts_only(cache: Cache, origin: Origin, tmp_path: Path) -> None:
    body = b"auto " * 1000
    allowed = origin.add("/vendor/auto-1.0.tar.gz", body)
    refused = allowed.replace("127.0.0.1", "localhost") + ".other"
    origin.add("/vendor/auto-1.0.tar.gz.other", b"never")
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "auto.yaml").write_text("auto:\n  allow_hosts: [127.0.0.1]\n")
    w = Watcher(cache.data, cache.access_log, "--auto", "-m", str(manifests), "--index-every", "0")
    try:
        wait_for(lambda: checkpoint(cache.data, cache.access_log) is not None, 20)
        target = cache.url + keys.cache_path(keys.normalize(allowed))
        assert requests.head(target).status_code == 404
        assert requests.head(cache.url + shim_path(refused)).status_code == 404
        wait_for(lambda: requests.head(target).status_code == 200, 20)  # the next request hits
        assert requests.get(target).content == body
        wait_for(lambda: caught_up(cache))
        assert origin.seen("/vendor/auto-1.0.tar.gz.other") == []
        rep = run_withcache(
            "report", "--format", "json", "-m", str(manifests), "--data", str(cache.data)
        )
        doc = json.loads(rep.stdout)
        assert [a["url"] for a in doc["auto_filled_not_in_manifest"]] == [keys.normalize(allowed)]
        html = (cache.data / "www" / "index.html").read_text()
        assert "auto-filled" in html
        assert [r["url"] for r in misses_json(cache.data)] == [refused]
    finally:
        w.stop()


def test_auto_fill_refuses_a_redirect_to_a_host_not_allowed(data: Layout) -> None:
    """Every hop is checked: an allowed host cannot bounce the fetch elsewhere."""
    import http.server
    import threading

    from withcache.autofill import AutoFill

    asked: list[str] = []

    class Redirect(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            asked.append(f"{self.headers['Host']} {self.path}")
            port = self.server.server_address[1]
            self.send_response(302)
            self.send_header("Location", f"http://localhost:{port}/elsewhere.bin")
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        key = f"http://127.0.0.1:{server.server_address[1]}/bounce.bin"
        auto = AutoFill(data, ["127.0.0.1"], jobs=1)
        try:
            assert auto.offer([key, "http://localhost:1/never.bin"]) == 1
        finally:
            auto.close()  # waits for the running fetch
        assert auto.fetched == []
        assert {a.split()[1] for a in asked} == {"/bounce.bin"}  # /elsewhere.bin: never
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_since_shows_only_recent_misses(data: Layout) -> None:
    from withcache import misses, store

    now = time.time()
    conn = store.connect(data.db)
    for url, seen in (
        ("https://a.example/old.bin", now - 10 * 86400),
        ("https://a.example/new.bin", now - 3600),
    ):
        conn.execute(
            "INSERT INTO misses (key, url, count, first_seen, last_seen) VALUES (?, ?, 1, ?, ?)",
            (url, url, seen, seen),
        )
    conn.close()
    assert [r["url"] for r in misses_json(data.root, "--since", "2d")] == [
        "https://a.example/new.bin"
    ]
    assert len(misses_json(data.root, "--since", "2w")) == 2
    r = run_withcache("misses", "--data", str(data.root), "--since", "soon")
    assert r.returncode == 2 and "like 7d, 12h" in r.stderr
    assert [misses.parse_age(t) for t in ("90s", "30m", "12h", "7d", "2w")] == [
        90,
        1800,
        43200,
        604800,
        1209600,
    ]
