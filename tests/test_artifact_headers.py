"""What the origin told its clients, recorded at sync and sent by nginx per artifact.

Sync records the final response's Content-Disposition and where the origin's
redirects led; nginx serves each such artifact from a location of its own with
those headers (DATA/run/artifact-headers.conf), which sync rewrites whole and a
running `withcache serve` reloads.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import string
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import Cache, check_server_block, run_withcache
from tests.origin import Origin
from tests.test_sync import manifest, records, sync
from withcache import artifact_headers, keys, nginx, store
from withcache.layout import Layout

CD = 'attachment; filename="tool-1.4.tar.gz"'


def redirecting(origin: Origin, second: Origin) -> tuple[str, str, str]:
    """A release URL that redirects twice (to another host, with a signed query) to
    bytes sent with a Content-Disposition; a plain artifact; and one with only a CD."""
    final = second.add("/assets/7f3a", b"the release", headers={"Content-Disposition": CD})
    hop = origin.add("/dl/v1.4/tool", b"", status=302)
    origin.routes["/dl/v1.4/tool"].headers["Location"] = final + "?X-Amz-Signature=abc"
    url = origin.add("/releases/latest/tool", b"", status=301)
    origin.routes["/releases/latest/tool"].headers["Location"] = hop
    plain = origin.add("/plain.bin", b"plain")
    named = origin.add("/download.php", b"fw", headers={"Content-Disposition": "inline"})
    return url, plain, named


@pytest.fixture
def second() -> Iterator[Origin]:
    o = Origin()
    yield o
    o.close()


def test_sync_records_the_final_disposition_and_redirects(
    origin: Origin, second: Origin, data: Layout, tmp_path: Path
) -> None:
    url, plain, named = redirecting(origin, second)
    assert sync(data, manifest(tmp_path, [f"- {url}", f"- {plain}", f"- {named}"])) == 0
    recs = records(data)
    got = recs[keys.normalize(url)]
    assert (got.disposition, got.redirects) == (CD, 2)
    assert got.final_url == f"{second.base}/assets/7f3a?"  # the signature is not kept
    assert (recs[keys.normalize(plain)].redirects, recs[keys.normalize(plain)].disposition) == (
        0,
        None,
    )
    assert recs[keys.normalize(named)].final_url is None
    # Only the two with something to say get a location, each under its own token.
    text = data.artifact_headers.read_text()
    assert text.count("location ^~ /b/") == 2
    assert f"/b/{keys.token(keys.normalize(url))}/" in text
    assert f"/b/{keys.token(keys.normalize(plain))}/" not in text


def test_nginx_sends_them_for_that_artifact_only(
    origin: Origin, second: Origin, cache: Cache, tmp_path: Path
) -> None:
    """Synced while `withcache serve` runs: its nginx reloads and sends them at once."""
    url, plain, named = redirecting(origin, second)
    lay = Layout(cache.data)
    before = lay.artifact_headers.stat().st_mtime_ns
    assert sync(lay, manifest(tmp_path, [f"- {url}", f"- {plain}", f"- {named}"])) == 0
    assert lay.artifact_headers.stat().st_mtime_ns != before
    base = cache.url

    def heads(u: str, name: str = "x") -> requests.structures.CaseInsensitiveDict[str]:
        path = f"/{keys.token_dir(keys.normalize(u))}/{name}"
        deadline = time.monotonic() + 10  # a reload takes effect when new workers are up
        while True:
            r = requests.head(base + path, timeout=5)
            if r.status_code == 200 and (u == plain or "Content-Disposition" in r.headers):
                return r.headers
            assert time.monotonic() < deadline, r.headers
            time.sleep(0.05)

    h = heads(url)
    assert h["Content-Disposition"] == CD
    assert h["X-Withcache-Redirect"] == "2 http 7f3a?"
    assert h["Cache-Control"] == "public, max-age=31536000, immutable"  # the same read path
    body = requests.get(f"{base}/{keys.token_dir(keys.normalize(url))}/any", timeout=5)
    assert body.content == b"the release" and body.headers["Content-Disposition"] == CD
    assert heads(named)["Content-Disposition"] == "inline"
    assert "X-Withcache-Redirect" not in heads(named)
    h = heads(plain)
    assert "Content-Disposition" not in h and "X-Withcache-Redirect" not in h
    # A token that is not an artifact is still a 404 with no headers of anyone's.
    r = requests.head(f"{base}/b/{keys.token('https://nowhere.example/x')}/x", timeout=5)
    assert r.status_code == 404 and "Content-Disposition" not in r.headers


def test_a_sync_that_changes_nothing_leaves_the_file_alone(
    origin: Origin, second: Origin, data: Layout, tmp_path: Path
) -> None:
    url, plain, _named = redirecting(origin, second)
    m = manifest(tmp_path, [f"- {url}", f"- {plain}"])
    assert sync(data, m) == 0
    before = data.artifact_headers.stat().st_mtime_ns
    assert sync(data, m) == 0
    assert data.artifact_headers.stat().st_mtime_ns == before
    assert not nginx.write_artifact_headers(data)  # in line with the records already


def test_an_older_db_gets_the_columns_and_keeps_its_records(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    old = sqlite3.connect(db)
    old.execute(
        "CREATE TABLE artifacts (key TEXT PRIMARY KEY, url TEXT NOT NULL, name TEXT NOT NULL,"
        " size INTEGER NOT NULL, sha256 TEXT NOT NULL, fetched_at REAL NOT NULL, etag TEXT,"
        " last_modified TEXT, source TEXT NOT NULL DEFAULT 'manifest')"
    )
    old.execute("INSERT INTO artifacts VALUES ('https://a/x', 'https://a/x', 'x', 1, 'ab', 1.0,"
                " NULL, NULL, 'manifest')")  # fmt: skip
    old.commit()
    old.close()
    # Read-only first (sync --dry-run): the old table as it is.
    assert store.read_artifacts(db)["https://a/x"].redirects == 0
    conn = store.connect(db)
    try:
        a = store.artifacts(conn)["https://a/x"]
        assert (a.size, a.disposition, a.redirects, a.final_url) == (1, None, 0, None)
        y = store.Artifact("https://a/y", "https://a/y", "y", 2, "cd", 2.0, "e", "l", "manifest",
                           "inline", 1, "https://b/z")  # fmt: skip
        store.put_artifact(conn, y)
        assert store.artifacts(conn)["https://a/y"].final_url == "https://b/z"
    finally:
        conn.close()
    store.connect(db).close()  # again: nothing left to add


# --- The values: what nginx can be told to send, exactly ---------------------------


def unquote(q: str) -> str:
    """What nginx's config parser makes of a quoted string (its backslash escapes)."""
    assert q[0] == q[-1] == '"'
    out, i, body = [], 0, q[1:-1]
    while i < len(body):
        if body[i] == "\\":
            i += 1
        out.append(body[i])
        i += 1
    return "".join(out)


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(max_codepoint=0xFF), max_size=80))
def test_a_value_is_sent_exactly_or_not_at_all(value: str) -> None:
    q = artifact_headers.quoted(value)
    if q is None:
        assert value == "" or "$" in value or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)
    else:
        assert unquote(q) == value


TRICKY = [
    'attachment; filename="a \\"b\\".tar.gz"',
    "attachment; filename*=UTF-8''gr%C3%BC%C3%9Fe.tar.gz",
    "attachment; filename=\"{x}.bin\"; x=';'",
    "attachment; filename=caf\xe9.txt",  # Latin-1, as a server may send it raw
    "inline",
]


def test_tricky_values_pass_nginx_t_and_come_back_byte_for_byte(cache: Cache) -> None:
    lay = Layout(cache.data)
    urls = [f"https://v.example/{i}" for i in range(len(TRICKY) + 2)]
    for u in urls:
        cache.plant(u, b"x")
    conn = store.connect(lay.db)
    try:
        have = store.artifacts(conn)
        for u, v in zip(urls, [*TRICKY, "cost $5", "a\nb"], strict=True):
            store.put_artifact(conn, dataclasses.replace(have[u], disposition=v))
    finally:
        conn.close()
    assert nginx.refresh_artifact_headers(lay) is None  # reloaded without a complaint
    nginx.check(lay.run / "nginx.conf")

    def header(u: str) -> str | None:
        r = requests.head(f"{cache.url}/{keys.token_dir(u)}/x", timeout=5)
        return r.headers.get("Content-Disposition")

    # http.client reads headers as Latin-1, as sync did: the very bytes come back. (An
    # old worker may take a connection or two while the reload finishes.)
    want = [*TRICKY, None, None]
    deadline = time.monotonic() + 20
    while (got := [header(u) for u in urls]) != want:
        assert time.monotonic() < deadline, got
        time.sleep(0.05)


def test_the_system_snippet_includes_the_file_and_passes_nginx_t(tmp_path: Path) -> None:
    data = tmp_path / "data"
    r = run_withcache("nginx-config", "--data", str(data), "--listen", "127.0.0.1:8099")
    assert r.returncode == 0, r.stderr
    assert f"include {data.resolve()}/run/artifact-headers.conf;" in r.stdout
    assert (data / "run" / "artifact-headers.conf").exists()  # made, though nothing synced
    assert not (data / "state" / "withcache.db").exists()
    Layout(data).ensure()
    check_server_block(tmp_path, r.stdout)


def test_entries_are_only_for_artifacts_with_something_to_say() -> None:
    moved = {"redirects": 1, "final_url": "https://b.example/x/y.tar.gz"}
    long = {"redirects": 3, "final_url": "http://c.example/?"}
    recs = [
        store.Artifact("https://a.example/1", "u", "1", 1, "s", 0.0),
        store.Artifact("https://a.example/2", "u", "2", 1, "s", 0.0, disposition="inline"),
        store.Artifact("https://a.example/3", "u", "3", 1, "s", 0.0, **moved),  # type: ignore[arg-type]
        store.Artifact("https://a.example/4", "u", "4", 1, "s", 0.0, disposition="$x"),
        store.Artifact("https://a.example/" + "l" * 400, "u", "5", 1, "s", 0.0, **long),  # type: ignore[arg-type]
    ]
    got = dict(artifact_headers.entries(recs))
    assert got == {
        keys.token("https://a.example/2"): [("Content-Disposition", '"inline"')],
        keys.token("https://a.example/3"): [("X-Withcache-Redirect", '"1 https y.tar.gz"')],
        "/".join(keys.segments(keys.token("https://a.example/" + "l" * 400))): [
            ("X-Withcache-Redirect", '"3 http ?"')
        ],
    }
    assert set(string.ascii_letters) <= set(artifact_headers.quoted(string.ascii_letters) or "")
