"""Mirror misses and hits through the review loop: a portage-like client, the watcher,
`misses`, `report`, the index, and `withcache add --mirror`."""

from __future__ import annotations

import configparser
import json
import textwrap
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from tests.conftest import Cache, run_withcache, start_nginx, stop_nginx
from tests.mirrorkit import b2_dir, link, mirror_manifest
from tests.origin import Origin
from tests.test_misses_e2e import caught_up, misses_json, wait_for
from tests.watcher import Watcher, db
from withcache import keys
from withcache.cli import main
from withcache.layout import Layout


class PortageLike:
    """What portage's fetch does with GENTOO_MIRRORS: per mirror, read its
    distfiles/layout.conf once (flat when there is none), then ask each mirror in turn
    for the quoted path, moving on after a 404."""

    def __init__(self, mirrors: list[str]) -> None:
        self.mirrors = mirrors
        self.layouts: dict[str, str] = {}
        self.got_from: dict[str, str] = {}

    def structure(self, mirror: str) -> str:
        if mirror not in self.layouts:
            r = requests.get(f"{mirror}/distfiles/layout.conf", timeout=10)
            layout = "flat"
            if r.status_code == 200:
                conf = configparser.ConfigParser()
                conf.read_string(r.text)
                layout = conf.get("structure", "0", fallback="flat")
            self.layouts[mirror] = layout
        return self.layouts[mirror]

    def fetch(self, name: str) -> bytes:
        for mirror in self.mirrors:
            hashed = self.structure(mirror) == "filename-hash BLAKE2B 8"
            path = f"{b2_dir(name)}/{name}" if hashed else name
            r = requests.get(f"{mirror}/distfiles/{quote(path)}", timeout=10)
            if r.status_code == 200:
                self.got_from[name] = mirror
                return r.content
            assert r.status_code == 404, (mirror, name, r.status_code)
        raise AssertionError(f"no mirror had {name}")


def test_a_portage_like_loop_gets_everything_and_after_auto_fill_asks_only_the_cache(
    data: Layout, origin: Origin, tmp_path: Path
) -> None:
    names = [f"pkg{i}-1.{i}.tar.xz" for i in range(6)] + ["libsigc++-2.12.1.tar.xz"]
    bodies = {n: (n * 997).encode() for n in names}
    for n, body in bodies.items():
        origin.add(f"/distfiles/{b2_dir(n)}/{n}", body)
        origin.add(f"/distfiles/{b2_dir(n)}/{quote(n)}", body)  # the test origin decodes nothing
    origin.add("/distfiles/layout.conf", b"[structure]\n0=filename-hash BLAKE2B 8\n")
    listed = names[:3]
    m = mirror_manifest(
        tmp_path / "m.yaml", "gentoo", [origin.base], listed, layout="gentoo", auto=True
    )
    assert main(["sync", "-q", "--data", str(data.root), "-m", str(m)]) == 0
    cache = start_nginx(data.root, None, "-m", str(m))
    w = Watcher(data.root, data.access_log, "--index-every", "0", "--auto", "-m", str(m))
    try:
        ours = f"{cache.url}/m/gentoo"
        client = PortageLike([ours, origin.base])
        for n in names:
            assert client.fetch(n) == bodies[n]
        assert client.layouts == {
            ours: "filename-hash BLAKE2B 8",
            origin.base: client.layouts[origin.base],
        }
        assert {n for n, src in client.got_from.items() if src == ours} == set(listed)
        # the cache's misses are recorded, and auto: true fills each from the source
        unlisted = names[3:]
        wait_for(
            lambda: all(
                link(data, "gentoo", f"distfiles/{b2_dir(n)}/{n}").exists() for n in unlisted
            ),
            timeout=30,
        )
        wait_for(lambda: caught_up(cache))
        rows = {r["url"]: r for r in misses_json(data.root, "--all")}
        assert set(rows) == {f"/m/gentoo/distfiles/{b2_dir(n)}/{n}" for n in unlisted}
        assert all(r["kind"] == "mirror" and r["status"] == "cached" for r in rows.values())
        # the same loop again asks only the cache
        upstream = len(origin.requests)
        again = PortageLike([ours, origin.base])
        for n in names:
            assert again.fetch(n) == bodies[n]
        assert set(again.got_from.values()) == {ours}
        assert len(origin.requests) == upstream
    finally:
        assert w.term() == 0, w.stderr
        stop_nginx(cache.proc)
    conn = db(data.root)
    try:
        sources = dict(conn.execute("SELECT url, source FROM artifacts"))
    finally:
        conn.close()
    auto = {u.rsplit("/", 1)[1] for u, s in sources.items() if s == "auto"}
    assert auto == set(unlisted)  # flagged until a manifest lists them


@pytest.fixture
def cache_with_mirror(data: Layout, origin: Origin, tmp_path: Path) -> Cache:
    body = b"held" * 1000
    origin.add("/pub/held.tgz", body)
    (tmp_path / "manifests").mkdir()
    m = mirror_manifest(
        tmp_path / "manifests" / "m.yaml", "lab", [f"{origin.base}/pub/"], ["held.tgz"]
    )
    assert main(["sync", "-q", "--data", str(data.root), "-m", str(m)]) == 0
    return start_nginx(data.root, None, "-m", str(m.parent))


def test_misses_report_index_and_hits_know_mirror_paths(
    cache_with_mirror: Cache, origin: Origin, tmp_path: Path
) -> None:
    cache = cache_with_mirror
    data = cache.layout
    try:
        w = Watcher(data.root, data.access_log, "--index-every", "0")
        try:
            for _ in range(3):
                assert requests.get(f"{cache.url}/m/lab/new/tool-2.0.tgz").status_code == 404
            assert requests.head(f"{cache.url}/m/lab/new/tool-2.0.tgz").status_code == 404
            assert requests.get(f"{cache.url}/m/lab/held.tgz").status_code == 200
            key = keys.normalize(f"{origin.base}/pub/held.tgz")
            assert requests.get(cache.url + keys.cache_path(key)).status_code == 200
            assert requests.get(f"{cache.url}/m/lab/bad%20path").status_code == 404
            wait_for(lambda: caught_up(cache, 7))  # the 7 requests above, all logged
        finally:
            assert w.term() == 0
    finally:
        stop_nginx(cache.proc)
    (row,) = misses_json(data.root)
    assert row["url"] == "/m/lab/new/tool-2.0.tgz" and row["kind"] == "mirror"
    assert row["count"] == 4 and row["key"] == "mirror:lab/new/tool-2.0.tgz"
    conn = db(data.root)
    try:
        hits = dict(conn.execute("SELECT key, count FROM hits"))
        counters = dict(conn.execute("SELECT name, value FROM counters"))
    finally:
        conn.close()
    assert hits == {key: 2}  # one through /m/, one through /b/: one artifact
    assert counters["invalid"] == 1  # the malformed path is never a miss
    r = run_withcache("misses", "--data", str(data.root))
    assert "/m/lab/new/tool-2.0.tgz" in r.stdout
    r = run_withcache("misses", "--yaml", "--data", str(data.root))
    assert (
        "mirrors:" in r.stdout
        and "  lab:\n    files:\n      - new/tool-2.0.tgz  # 4 requests" in r.stdout
    )
    r = run_withcache("report", "--peek", "--data", str(data.root))
    assert "withcache add --mirror lab new/tool-2.0.tgz" in r.stdout
    md = run_withcache("report", "--peek", "--format", "markdown", "--data", str(data.root))
    assert "`withcache add --mirror lab new/tool-2.0.tgz`" in md.stdout
    # the index and the catalog list the file with its mirror path and source
    assert main(["index", "--data", str(data.root)]) == 0
    catalog = json.loads((data.www / "catalog.json").read_text())
    (art,) = catalog["artifacts"]
    assert art["mirror_path"] == "/m/lab/held.tgz"
    assert art["served_by"] == f"{origin.base}/pub/held.tgz"
    html = (data.www / "index.html").read_text()
    assert "/m/lab/held.tgz" in html and "withcache add --mirror lab new/tool-2.0.tgz" in html
    # dismissing takes either spelling
    r = run_withcache("misses", "dismiss", "/m/lab/new/tool-2.0.tgz", "--data", str(data.root))
    assert r.returncode == 0 and misses_json(data.root) == []
    r = run_withcache("misses", "dismiss", "mirror:lab/../x", "--data", str(data.root))
    assert r.returncode == 2 and "not a mirror name and path" in r.stderr


GENTOO = """
# our gentoo mirror
mirrors:
  gentoo:          # GENTOO_MIRRORS points here
    sources: [https://distfiles.gentoo.org/]
    layout: gentoo
    files:
      - foo-1.2.tar.gz   # keep this comment
  flowish:
    sources: [https://f.example/]
    files: []
  bare:
    sources:
      - https://b.example/
"""


def test_add_mirror_appends_to_the_file_that_defines_it_keeping_comments(
    tmp_path: Path,
) -> None:
    d = tmp_path / "manifests"
    d.mkdir()
    (d / "a.yaml").write_text("artifacts:\n  - https://x.example/a.tgz\n")
    g = d / "g.yaml"
    g.write_text(textwrap.dedent(GENTOO).lstrip())
    ok = lambda *a: run_withcache("add", "--against", str(d), "--mirror", *a)  # noqa: E731
    r = ok("gentoo", "distfiles/d5/bar-2.0.tar.xz", "which-2.23.tar.gz")
    assert r.returncode == 0, r.stderr
    assert "added 2 files to mirror gentoo" in r.stderr
    r = ok("flowish", "pool/a.deb", "pool/b.deb", "--sha256", "A" * 64)
    assert r.returncode == 2 and "1 --sha256 for 2 URLs" in r.stderr
    r = ok("flowish", "pool/a.deb", "--sha256", "A" * 64)
    assert r.returncode == 0, r.stderr
    assert ok("bare", "x/y.tgz").returncode == 0
    assert g.read_text() == textwrap.dedent(
        """\
        # our gentoo mirror
        mirrors:
          gentoo:          # GENTOO_MIRRORS points here
            sources: [https://distfiles.gentoo.org/]
            layout: gentoo
            files:
              - foo-1.2.tar.gz   # keep this comment
              - distfiles/d5/bar-2.0.tar.xz
              - which-2.23.tar.gz
          flowish:
            sources: [https://f.example/]
            files:
              - path: pool/a.deb
                sha256: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
          bare:
            sources:
              - https://b.example/
            files:
              - x/y.tgz
        """
    )
    assert run_withcache("check", str(d)).returncode == 0
    before = g.read_text()
    refusals = {
        ("gentoo", "foo-1.2.tar.gz"): "is listed twice",
        ("gentoo", "distfiles/00/baz.tgz"): "is not where GLEP 75 puts it",
        ("gentoo", "../etc/passwd"): "'.' or '..' segment",
        ("gentoo", "a%20b"): "contains '%'",
        ("nope", "x"): "defines mirror 'nope'",
    }
    for (mirror, path), why in refusals.items():
        r = ok(mirror, path)
        assert r.returncode == 2 and why in r.stderr, (path, r.stderr)
    assert g.read_text() == before  # nothing changed on any refusal
