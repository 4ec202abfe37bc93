"""The read path, checked with real requests against real nginx."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from tests.conftest import Cache, check_server_block, run_withcache
from tests.tls import CA
from withcache import keys, nginx
from withcache.errors import NginxError
from withcache.layout import Layout

BODY = os.urandom(10_000)
ORIGIN = "https://vendor.example/dl/tool-1.2.tar.gz"


def raw_get(cache: Cache, path: str, method: str = "GET") -> tuple[int, bytes]:
    """Send the path exactly as written (requests/urllib3 would normalise dot segments)."""
    host, port = cache.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_hit_by_token_with_any_name(cache: Cache) -> None:
    url = cache.plant(ORIGIN, BODY)
    r = requests.get(url, timeout=5)
    assert r.status_code == 200 and r.content == BODY
    assert r.headers["Content-Type"] == "application/octet-stream"
    assert r.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert r.headers["ETag"] and r.headers["Last-Modified"]
    assert r.headers["Server"] == "nginx"  # server_tokens off: no version
    base = url.rsplit("/", 1)[0]
    for name in ("other-name.bin", "a%20b", "a%2Fb.bin", "%2e%2e", "&", ""):
        assert requests.get(f"{base}/{name}", timeout=5).content == BODY, name


def test_range_head_and_conditional(cache: Cache) -> None:
    url = cache.plant(ORIGIN, BODY)
    r = requests.get(url, headers={"Range": "bytes=100-199"}, timeout=5)
    assert r.status_code == 206 and r.content == BODY[100:200]
    assert r.headers["Content-Range"] == f"bytes 100-199/{len(BODY)}"
    h = requests.head(url, timeout=5)
    assert h.status_code == 200 and h.headers["Content-Length"] == str(len(BODY))
    r = requests.get(url, headers={"If-None-Match": h.headers["ETag"]}, timeout=5)
    assert r.status_code == 304


def test_long_token_split_path_hits(cache: Cache) -> None:
    origin = "https://vendor.example/" + "/".join(f"segment{i:02d}" for i in range(40)) + "/fw.bin"
    assert len(origin) > 400
    url = cache.plant(origin, BODY)
    assert url.count("/") >= 6
    assert requests.get(url, timeout=5).content == BODY
    # the same token unsplit is not an artifact
    tok = keys.token(keys.normalize(origin))
    assert requests.get(f"{cache.url}/b/{tok}/fw.bin", timeout=5).status_code == 404


def test_absent_token_is_404_and_no_autoindex(cache: Cache) -> None:
    cache.plant(ORIGIN, BODY)
    missing = keys.cache_path(keys.normalize("https://vendor.example/not-here.bin"))
    assert requests.get(cache.url + missing, timeout=5).status_code == 404
    assert requests.head(cache.url + missing, timeout=5).status_code == 404
    for path in ("/b/", "/b", "/b/x", "/b/not*a*token/x", "/www/"):
        assert requests.get(cache.url + path, timeout=5).status_code == 404, path


@pytest.mark.parametrize("method", ["PUT", "DELETE", "POST", "PATCH", "OPTIONS"])
def test_other_methods_are_405(cache: Cache, method: str) -> None:
    url = cache.plant(ORIGIN, BODY)
    assert requests.request(method, url, data=b"x", timeout=5).status_code == 405
    assert requests.get(url, timeout=5).content == BODY


@pytest.mark.parametrize(
    "path",
    [
        "/../state/withcache.db",
        "/b/../state/withcache.db",
        "/b/../../state/withcache.db",
        "/b/%2e%2e/%2e%2e/state/withcache.db",
        "/%2e%2e/state/withcache.db",
        "/b/..%2f..%2fstate%2fwithcache.db",
        "/b/%2e%2e%2f%2e%2e%2fstate/withcache.db",
        "//state/withcache.db",
        "/b//..//..//state/withcache.db",
        "/state/withcache.db",
        "/run/nginx.conf",
        "/log/access.log",
        "/b/..%2f..%2frun%2fnginx.conf/x",
        "/../../../../etc/passwd",
        "/b/%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd/x",
    ],
)
def test_nothing_outside_www_is_reachable(cache: Cache, path: str) -> None:
    cache.plant(ORIGIN, BODY)
    status, body = raw_get(cache, path)
    assert status in (400, 403, 404), (path, status)
    assert b"SQLite" not in body and b"root:" not in body and b"worker_processes" not in body


def test_planted_symlinks_are_not_followed(cache: Cache, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    secret.chmod(0o644)
    link_file = "https://evil.example/file-link"
    link_dir = "https://evil.example/dir-link"
    d = cache.layout.www / keys.token_dir(keys.normalize(link_file))
    d.mkdir(parents=True)
    (d / keys.BLOB_FILE).symlink_to(secret)
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o755)
    (outside / keys.BLOB_FILE).write_text("top secret")
    (outside / keys.BLOB_FILE).chmod(0o644)
    (cache.layout.www / keys.token_dir(keys.normalize(link_dir))).symlink_to(outside)
    for origin in (link_file, link_dir):
        r = requests.get(cache.url + keys.cache_path(keys.normalize(origin)), timeout=5)
        assert r.status_code in (403, 404) and b"secret" not in r.content


def test_index_catalog_healthz_headers(cache: Cache) -> None:
    from withcache import index

    cache.plant(ORIGIN, BODY)
    index.render(cache.layout)
    r = requests.get(cache.url + "/", timeout=5)
    assert r.status_code == 200 and "tool-1.2.tar.gz" in r.text
    assert r.headers["Content-Type"].startswith("text/html")
    assert r.headers["Cache-Control"] == "public, max-age=60"
    r = requests.get(cache.url + "/catalog.json", timeout=5)
    assert r.headers["Content-Type"] == "application/json"
    assert r.json()["artifacts"][0]["url"] == ORIGIN
    assert r.headers["Cache-Control"] == "public, max-age=60"
    r = requests.get(cache.url + "/healthz", timeout=5)
    assert (r.status_code, r.text) == (200, "ok\n")


def test_every_request_logs_one_json_line(cache: Cache) -> None:
    url = cache.plant(ORIGIN, BODY)
    before = len(cache.log_lines())
    requests.get(url, timeout=5)
    requests.head(url, headers={"User-Agent": 'evil"agent\\\x01{'}, timeout=5)
    requests.get(url, headers={"Range": "bytes=0-9"}, timeout=5)
    requests.get(cache.url + "/b/nope/x", timeout=5)
    requests.put(url, timeout=5)
    raw_get(cache, '/b/%00%ff/x%C3%BC"}')
    lines = cache.log_lines(at_least=before + 6)[before:]
    assert len(lines) == 6
    entries = [json.loads(line) for line in lines]
    for e in entries:
        assert {"time", "addr", "method", "uri", "status", "bytes", "ua"} <= set(e)
        assert isinstance(e["status"], int) and isinstance(e["bytes"], int)
    assert [e["method"] for e in entries[:5]] == ["GET", "HEAD", "GET", "GET", "PUT"]
    assert [e["status"] for e in entries[:5]] == [200, 200, 206, 404, 405]
    assert entries[0]["uri"] == url.removeprefix(cache.url)
    assert entries[0]["bytes"] == len(BODY)
    assert entries[1]["ua"] == 'evil"agent\\\x01{'


@pytest.mark.skipif(os.geteuid() != 0, reason="only root switches nginx's worker user")
def test_workers_never_run_as_root(cache: Cache) -> None:
    pid = cache.proc.pid  # `withcache serve` exec'd nginx's master
    users = subprocess.run(
        ["ps", "-o", "user=", "--ppid", str(pid)], capture_output=True, text=True
    ).stdout.split()
    assert users and set(users) == {"www-data"}


@pytest.mark.skipif(os.geteuid() != 0, reason="root only: a normal user reads its own tree")
def test_serve_names_the_directory_that_blocks_the_worker(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    blocked = tmp_path / "private"
    blocked.mkdir(mode=0o700)
    data = blocked / "data"
    r = run_withcache("serve", "--data", str(data), "--check-only")
    assert r.returncode == 2
    assert f"www-data, who cannot read {blocked}" in r.stderr


def test_serve_without_nginx_says_how_to_install(tmp_path: Path) -> None:
    r = run_withcache(
        "serve", "--data", str(tmp_path / "d"), env={"WITHCACHE_NGINX": "/nonexistent/nginx"}
    )
    assert r.returncode == 2
    assert "apt-get install nginx" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_nginx_t_failure_shows_nginx_words(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text("events {}\nhttp { server { listen 8080; bogus_directive on; } }\n")
    with pytest.raises(NginxError) as exc:
        nginx.check(conf)
    assert 'unknown directive "bogus_directive"' in str(exc.value)


def test_system_snippet_passes_nginx_t_and_shares_the_server_block(tmp_path: Path) -> None:
    data = tmp_path / "data"
    r = run_withcache("nginx-config", "--data", str(data), "--listen", "127.0.0.1:8099")
    assert r.returncode == 0
    snippet = r.stdout
    assert f"{data.resolve()}/log/access.log" in snippet
    assert "withcache watch" in snippet
    Layout(data).ensure()
    check_server_block(tmp_path, snippet)
    standalone = run_withcache(
        "nginx-config", "--standalone", "--data", str(data), "--listen", "127.0.0.1:8099"
    ).stdout
    block = snippet[snippet.index("server {") :].strip()
    assert "\n".join(line[4:] for line in standalone.splitlines() if line.startswith("    "))
    assert all(line.strip() in standalone for line in block.splitlines())


def test_serve_stops_cleanly_on_sigterm(cache: Cache) -> None:
    cache.proc.terminate()
    assert cache.proc.wait(10) == 0
    assert not (cache.layout.run / "nginx.pid").exists()


@pytest.mark.skipif(
    shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists(),
    reason="nginx not installed",
)
def test_rendered_config_is_valid_for_ipv6_and_several_listens(tmp_path: Path) -> None:
    s = nginx.Settings(Layout(tmp_path / "d"), listen=("127.0.0.1:8097", "[::1]:8097"))
    conf = nginx.write_config(s)
    nginx.check(conf)
    text = conf.read_text()
    assert "listen 127.0.0.1:8097;" in text and "listen [::1]:8097;" in text


def test_aio_threads_only_on_request(tmp_path: Path) -> None:
    plain = run_withcache("nginx-config", "--standalone", "--data", str(tmp_path / "d"))
    assert "aio threads;" not in plain.stdout and "open_file_cache max=" in plain.stdout
    if nginx.has_threads():
        s = nginx.Settings(Layout(tmp_path / "d"), listen=("127.0.0.1:8096",), aio_threads=True)
        conf = nginx.write_config(s)
        nginx.check(conf)
        assert "aio threads;" in conf.read_text() and "thread_pool default" in conf.read_text()


def test_runtime_paths_live_under_run(cache: Cache) -> None:
    conf = (cache.layout.run / "nginx.conf").read_text()
    run = cache.layout.run.resolve()
    for directive in ("pid", "error_log", "client_body_temp_path", "proxy_temp_path"):
        lines = [line.strip() for line in conf.splitlines() if line.strip().startswith(directive)]
        assert any(f" {run}/" in line for line in lines), directive
    assert (run / "nginx.pid").exists() and (run / "error.log").exists()


# --- https: the same tree over TLS ---------------------------------------------------


def test_https_serves_the_same_bytes_as_http(tls_cache: Cache, tls_ca: CA) -> None:
    path = tls_cache.plant(ORIGIN, BODY)[len(tls_cache.url) :]
    assert tls_cache.tls_url
    plain = requests.get(tls_cache.url + path, timeout=5)
    tls = requests.get(tls_cache.tls_url + path, timeout=5, verify=str(tls_ca.ca))
    assert plain.content == tls.content == BODY
    part = requests.get(
        tls_cache.tls_url + path, headers={"Range": "bytes=10-19"}, verify=str(tls_ca.ca)
    )
    assert (part.status_code, part.content) == (206, BODY[10:20])
    assert requests.get(tls_cache.tls_url + "/b/AAAA/x", verify=str(tls_ca.ca)).status_code == 404
    # Both listeners write the one access log the watcher follows.
    assert len(tls_cache.log_lines(3, where=lambda line: '"uri":"' + path in line)) == 3
    with pytest.raises(requests.exceptions.SSLError):  # nothing trusts it by default
        requests.get(tls_cache.tls_url + path, timeout=5)


def test_system_snippet_with_tls_passes_nginx_t(tmp_path: Path, tls_ca: CA) -> None:
    data = tmp_path / "data"
    args = ["--data", str(data), "--listen", "127.0.0.1:8099", "--tls-listen", "127.0.0.1:8098"]
    tls = ["--tls-cert", str(tls_ca.cert), "--tls-key", str(tls_ca.key)]
    r = run_withcache("nginx-config", *args, *tls)
    assert r.returncode == 0, r.stderr
    assert "listen 127.0.0.1:8099;" in r.stdout and "listen 127.0.0.1:8098 ssl;" in r.stdout
    assert f"ssl_certificate {tls_ca.cert};" in r.stdout
    Layout(data).ensure()
    check_server_block(tmp_path, r.stdout)
    default = run_withcache("nginx-config", "--data", str(data), *tls).stdout
    assert "listen 8080;" in default and "listen 8443 ssl;" in default


@pytest.mark.parametrize(
    "args, message",
    [
        (["--tls-cert", "{cert}"], "--tls-cert and --tls-key go together"),
        (["--tls-key", "{key}"], "--tls-cert and --tls-key go together"),
        (["--tls-listen", "8443"], "--tls-listen needs --tls-cert and --tls-key"),
        (["--tls-cert", "/nonexistent.pem", "--tls-key", "{key}"], "/nonexistent.pem: no such"),
        (["--tls-cert", "{cert}", "--tls-key", "{key}", "--tls-listen", "x"], "HOST:PORT"),
        (["--tls-cert", "{key}", "--tls-key", "{cert}"], "nginx -t failed"),  # swapped
    ],
)
def test_bad_tls_options_are_one_clear_error_and_change_nothing(
    args: list[str], message: str, tmp_path: Path, tls_ca: CA
) -> None:
    tmp_path.chmod(0o755)  # nginx's workers must get through, run as root or not
    data = tmp_path / "data"
    assert run_withcache("serve", "--check-only", "--data", str(data)).returncode == 0
    conf = data / "run" / "nginx.conf"
    before = conf.read_text()
    argv = [a.format(cert=tls_ca.cert, key=tls_ca.key) for a in args]
    r = run_withcache("serve", "--check-only", "--data", str(data), *argv)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr
    if "nginx -t" not in message:  # refused before anything was written
        assert conf.read_text() == before
    r = run_withcache("nginx-config", "--data", str(data), *argv)
    assert r.returncode == (0 if "nginx -t" in message else 2)
