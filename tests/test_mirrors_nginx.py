"""/m/ through real nginx (`withcache serve -m`): hits, hostile paths, fall-through, TLS."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import Cache, free_port, start_nginx, stop_nginx
from tests.mirrorkit import b2_dir, blob, link, mirror_manifest, rows, same_inode
from tests.origin import Origin
from tests.test_misses_e2e import misses_json, wait_for
from tests.watcher import Watcher
from withcache import keys
from withcache.cli import main
from withcache.layout import Layout
from withcache.mirrors import paths

ROOT = Path(__file__).resolve().parent.parent


def raw(
    cache: Cache, path: str, method: str = "GET", **headers: str
) -> tuple[int, bytes, dict[str, str]]:
    """Send the path exactly as written (requests would normalise it)."""
    host, port = cache.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k.replace("_", "-"), v)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read(), dict(resp.getheaders())
    finally:
        conn.close()


def log(cache: Cache, prefix: str = "/m/", at_least: int = 0) -> list[dict[str, object]]:
    """The logged requests under `prefix`; with `at_least`, wait for that many."""
    lines = cache.log_lines(at_least, where=lambda line: f'"uri":"{prefix}' in line)
    return [json.loads(line) for line in lines]


def snapshot(www: Path) -> dict[str, tuple[int, int]]:
    """Every file under www/ but the pages sync and the watcher re-render."""
    skip = {"index.html", "catalog.json", "report.html"}
    return {
        str(p.relative_to(www)): (p.stat().st_ino, p.stat().st_size)
        for p in www.rglob("*")
        if p.is_file() and p.name not in skip
    }


def closed_port() -> int:
    """A loopback port nothing listens on: a source that is down."""
    return free_port()


@pytest.fixture
def served(data: Layout, origin: Origin, tmp_path: Path) -> Iterator[tuple[Cache, Path]]:
    """A gentoo-layout mirror synced from the origin, served by nginx with its manifest."""
    names = ["foo-1.2.tar.gz", "gtk+-2.24.33.tar.xz"]
    for n in names:
        origin.add(f"/gentoo/distfiles/{b2_dir(n)}/{n}", n.encode() * 5000)
    m = mirror_manifest(
        tmp_path / "m.yaml", "gentoo", [f"{origin.base}/gentoo/"], names, layout="gentoo"
    )
    assert main(["sync", "-q", "--data", str(data.root), "-m", str(m)]) == 0
    cache = start_nginx(data.root, None, "-m", str(m))
    yield cache, m
    stop_nginx(cache.proc)


def test_mirror_hits_are_the_blob_s_inode_with_range_etag_head_and_405(
    served: tuple[Cache, Path], origin: Origin
) -> None:
    cache, _ = served
    name = "foo-1.2.tar.gz"
    path = f"/m/gentoo/distfiles/{b2_dir(name)}/{name}"
    body = name.encode() * 5000
    r = requests.get(cache.url + path, timeout=5)
    assert r.status_code == 200 and r.content == body
    assert r.headers["Content-Type"] == "application/octet-stream"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    key = keys.normalize(f"{origin.base}/gentoo/distfiles/{b2_dir(name)}/{name}")
    b = requests.get(cache.url + keys.cache_path(key), timeout=5)
    assert b.content == body and b.headers["ETag"] == r.headers["ETag"]
    assert b.headers["Last-Modified"] == r.headers["Last-Modified"]
    assert same_inode(
        link(cache.layout, "gentoo", path[len("/m/gentoo/") :]), blob(cache.layout, key)
    )
    part = requests.get(cache.url + path, headers={"Range": "bytes=10-19"}, timeout=5)
    assert part.status_code == 206 and part.content == body[10:20]
    head = requests.head(cache.url + path, timeout=5)
    assert head.status_code == 200 and head.headers["Content-Length"] == str(len(body))
    again = requests.get(cache.url + path, headers={"If-None-Match": r.headers["ETag"]}, timeout=5)
    assert again.status_code == 304
    for method in ("POST", "PUT", "DELETE", "PROPFIND"):
        assert raw(cache, path, method)[0] == 405
    # portage quotes the name: gtk%2B is gtk+ on disk
    gtk = "gtk+-2.24.33.tar.xz"
    st, got, _ = raw(cache, f"/m/gentoo/distfiles/{b2_dir(gtk)}/gtk%2B-2.24.33.tar.xz")
    assert (st, got) == (200, gtk.encode() * 5000)
    conf = requests.get(cache.url + "/m/gentoo/distfiles/layout.conf", timeout=5)
    assert conf.status_code == 200 and conf.text == "[structure]\n0=filename-hash BLAKE2B 8\n"
    assert not [
        s for s in origin.requests if s.path.startswith("/gentoo/distfiles/") and s.method == "HEAD"
    ]


def test_the_shim_asking_for_the_first_source_url_gets_the_same_inode(
    served: tuple[Cache, Path], origin: Origin, tmp_path: Path
) -> None:
    if not shutil.which("curl"):
        pytest.skip("needs curl")
    cache, _ = served
    name = "foo-1.2.tar.gz"
    url = f"{origin.base}/gentoo/distfiles/{b2_dir(name)}/{name}"
    gets_before = len(origin.seen(f"/gentoo/distfiles/{b2_dir(name)}/{name}", "GET"))
    env = dict(
        {k: v for k, v in os.environ.items() if "WITHCACHE" not in k},
        WITHCACHE_SERVER=cache.url,
        HOME=str(tmp_path),
    )
    out = tmp_path / "got"
    r = subprocess.run(
        [str(ROOT / "shims" / "curlwithcache"), "-sSf", "-o", str(out), url],
        env=env,
        capture_output=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == name.encode() * 5000
    assert len(origin.seen(f"/gentoo/distfiles/{b2_dir(name)}/{name}", "GET")) == gets_before
    served_uris = [e["uri"] for e in log(cache, "/b/") if e["method"] == "GET"]
    assert served_uris == [keys.cache_path(keys.normalize(url))]
    inode = blob(cache.layout, keys.normalize(url)).stat().st_ino
    assert link(cache.layout, "gentoo", f"distfiles/{b2_dir(name)}/{name}").stat().st_ino == inode


HOSTILE = [
    "/m/gentoo/../../state/withcache.db",
    "/m/gentoo/..%2f..%2fstate%2fwithcache.db",
    "/m/gentoo/%2e%2e/%2e%2e/state/withcache.db",
    "/m/gentoo/%2E%2E%2F%2E%2E%2Fstate%2Fsecret",
    "/m/gentoo/distfiles/..%2f..%2f..%2f..%2fstate/secret",
    "/m/gentoo/a%00b",
    "/m/gentoo/%00",
    "/m/gentoo/a%2",
    "/m/gentoo/",
    "/m/gentoo",
    "/m/gentoo/" + "a" * 300,
    "/m/gentoo/" + "a/" * 700 + "a",
    "/m/gentoo/a%20b?x=../../secret",
    "/m/gentoo/a;b",
    "/m/gentoo/%5C..%5C..%5Cstate%5Csecret",
    "/m/gentoo/\\..\\..\\state\\secret",
    "/m/nope/state/secret",
    "/m/../state/secret",
    "/m/.%2e/state/secret",
    "/m//gentoo/../../../etc/passwd",
    "/m/gentoo/distfiles/layout.conf/../../../../state/secret",
]


def test_hostile_paths_never_escape_www_nor_reach_a_source_but_as_base_plus_path(
    data: Layout, origin: Origin, tmp_path: Path
) -> None:
    second = Origin()
    try:
        secret = b"SECRET-" + os.urandom(8).hex().encode()
        (data.state / "secret").write_bytes(secret)
        (data.root / "secret").write_bytes(secret)
        m = mirror_manifest(
            tmp_path / "m.yaml",
            "gentoo",
            [f"{origin.base}/base/", f"{second.base}/other/base/"],
            [],
            fallthrough=True,
        )
        cache = start_nginx(data.root, None, "-m", str(m))
        try:
            for path in HOSTILE:
                for method in ("GET", "HEAD"):
                    st, body, _ = raw(cache, path, method)
                    assert st in (400, 404), (path, method, st)
                    assert secret not in body and b"SQLite" not in body, path
        finally:
            stop_nginx(cache.proc)
        for o, base in ((origin, "/base/"), (second, "/other/base/")):
            for seen in o.requests:
                assert seen.path.startswith(base), seen.path
                rest = seen.path[len(base) :]
                assert paths.is_path(rest) and "?" not in rest, seen.path
    finally:
        second.close()


def test_fallthrough_streams_from_the_second_source_and_www_stays_as_it_was_until_auto_fill(
    data: Layout, origin: Origin, tmp_path: Path
) -> None:
    body = os.urandom(3 << 20)
    origin.add("/pub/pool/f.tgz", body)
    m = mirror_manifest(
        tmp_path / "m.yaml",
        "lab",
        [f"http://127.0.0.1:{closed_port()}/", f"{origin.base}/pub/"],
        [],
        auto=True,
        fallthrough=True,
    )
    assert main(["sync", "-q", "--data", str(data.root), "-m", str(m)]) == 0
    cache = start_nginx(data.root, None, "-m", str(m))
    try:
        before = snapshot(data.www)
        secrets = {"Cookie": "session=ours", "Authorization": "Bearer ours"}
        r = requests.get(cache.url + "/m/lab/pool/f.tgz?mirror=1", headers=secrets, timeout=10)
        assert r.status_code == 200 and r.content == body
        (seen,) = origin.seen("/pub/pool/f.tgz", "GET")
        assert seen.path == "/pub/pool/f.tgz"  # base + path: no query
        assert not {"Cookie", "Authorization"} & set(seen.headers)  # nor our clients' secrets
        part = requests.get(cache.url + "/m/lab/pool/f.tgz", headers={"Range": "bytes=5-9"})
        assert part.status_code == 206 and part.content == body[5:10]
        head = requests.head(cache.url + "/m/lab/pool/f.tgz", timeout=10)
        assert head.status_code == 200 and head.headers["Content-Length"] == str(len(body))
        assert requests.get(cache.url + "/m/lab/pool/none.tgz", timeout=10).status_code == 404
        assert snapshot(data.www) == before  # nothing streamed was stored
        assert not list((data.run / "proxy").rglob("*"))  # nor buffered to disk
        lines = log(cache, at_least=4)
        assert [e["status"] for e in lines] == [200, 206, 200, 404]
        assert all(e["upstream"] for e in lines), lines  # the fall-through log format
        # the watcher records it as a miss and, with --auto, fills it verified
        w = Watcher(data.root, data.access_log, "--index-every", "0", "--auto", "-m", str(m))
        try:
            wait_for(lambda: link(data, "lab", "pool/f.tgz").exists(), timeout=20)
        finally:
            assert w.term() == 0, w.stderr
        assert link(data, "lab", "pool/f.tgz").read_bytes() == body
        assert rows(data)["lab/pool/f.tgz"][1] == f"{origin.base}/pub/pool/f.tgz"
        listed = {r["url"]: r for r in misses_json(data.root, "--all")}
        assert listed["/m/lab/pool/f.tgz"]["kind"] == "mirror"
        assert listed["/m/lab/pool/f.tgz"]["count"] == 3
        assert listed["/m/lab/pool/f.tgz"]["status"] == "cached"
        assert listed["/m/lab/pool/none.tgz"]["status"] == "open"
        gets = len(origin.seen("/pub/pool/f.tgz", "GET"))
        r = requests.get(cache.url + "/m/lab/pool/f.tgz", timeout=10)
        assert r.content == body and len(origin.seen("/pub/pool/f.tgz", "GET")) == gets
        assert "upstream" not in log(cache)[-1]  # a hit from the tree
    finally:
        stop_nginx(cache.proc)


def test_without_fallthrough_a_miss_is_a_plain_404_and_no_source_is_asked(
    served: tuple[Cache, Path], origin: Origin
) -> None:
    cache, _ = served
    n = len(origin.requests)
    origin.add(f"/gentoo/distfiles/{b2_dir('new.tgz')}/new.tgz", b"new")
    assert (
        requests.get(f"{cache.url}/m/gentoo/distfiles/{b2_dir('new.tgz')}/new.tgz").status_code
        == 404
    )
    assert len(origin.requests) == n


# --- upstream TLS ------------------------------------------------------------------------


def make_ca_and_cert(d: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it (openssl CLI)."""
    if not shutil.which("openssl"):
        pytest.skip("needs the openssl command")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run = lambda *a: subprocess.run(["openssl", *a], cwd=d, check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=withcache test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    run("req", *ec, "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=127.0.0.1")
    (d / "ext").write_text("subjectAltName=IP:127.0.0.1,DNS:127.0.0.1\n")
    run("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "srv.pem", "-days", "2", "-extfile", "ext")  # fmt: skip
    return d / "ca.pem", d / "srv.pem", d / "srv.key"


def tls_origin(cert: Path, key: Path) -> Origin:
    """The loopback origin behind TLS: each accepted connection is wrapped."""
    o = Origin()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    plain = o.server.get_request

    def get_request() -> tuple[socket.socket, object]:
        sock, addr = plain()
        sock.settimeout(5)
        return ctx.wrap_socket(sock, server_side=True), addr

    o.server.get_request = get_request  # type: ignore[method-assign]
    o.base = o.base.replace("http://", "https://")
    return o


@pytest.mark.parametrize("trusted", [False, True], ids=["untrusted-ca", "trusted-ca"])
def test_fallthrough_verifies_upstream_tls(
    data: Layout, origin: Origin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trusted: bool
) -> None:
    ca, cert, key = make_ca_and_cert(tmp_path)
    secure = tls_origin(cert, key)
    try:
        secure.add("/f.tgz", b"over tls")
        origin.add("/f.tgz", b"over plain http")
        m = mirror_manifest(
            tmp_path / "m.yaml", "t", [secure.base, origin.base], [], fallthrough=True
        )
        if trusted:
            monkeypatch.setenv("SSL_CERT_FILE", str(ca))
        cache = start_nginx(data.root, None, "-m", str(m))
        try:
            r = requests.get(cache.url + "/m/t/f.tgz", timeout=10)
        finally:
            stop_nginx(cache.proc)
        assert r.status_code == 200
        # signed by a CA nginx does not trust: refused, and the next source serves it
        assert r.content == (b"over tls" if trusted else b"over plain http")
        assert bool(secure.seen("/f.tgz")) == trusted
    finally:
        secure.close()
