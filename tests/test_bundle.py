"""Offline bundles: export a synced store, import it into an empty data dir, and serve the
same URLs with the same bytes through real nginx; damaged and cut-off bundles."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, plant, run_withcache, start_nginx, stop_nginx, withcache_cmd
from tests.origin import Origin
from tests.pyindex_upstream import build_wheel
from tests.test_sync import assert_tree_matches_records, records
from withcache import keys
from withcache.bundle import format as bf
from withcache.layout import Layout

MiB = 1 << 20


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Layout]:
    """A synced store: listed artifacts (one with a long URL, one with a query kept),
    an auto-filled one, two keys with the same bytes, and a Python wheelhouse index.
    Made once for the module: the tests only read it."""
    tmp_path = tmp_path_factory.mktemp("site")
    tmp_path.chmod(0o755)
    origin = Origin()
    try:
        yield _synced_site(tmp_path, origin)
    finally:
        origin.close()


def _synced_site(tmp_path: Path, origin: Origin) -> Layout:
    urls = [origin.add(f"/pkg/tool-{i}.tar.gz", os.urandom(200_000 + i)) for i in range(6)]
    urls.append(origin.add("/" + "deep/" * 60 + "long-name.run", os.urandom(70_000)))
    urls.append(origin.add("/same-a.bin", b"same bytes" * 999))
    urls.append(origin.add("/same-b.bin", b"same bytes" * 999))
    query = origin.add("/download", os.urandom(5000)) + "?file=fw.bin&v=2"
    wh = tmp_path / "wheelhouse"
    wh.mkdir()
    name, body, _meta = build_wheel("wctest-local", "0.1")
    (wh / name).write_bytes(body)
    m = tmp_path / "manifests"
    m.mkdir()
    (m / "main.yaml").write_text(
        "artifacts:\n"
        + "".join(f"  - {u}\n" for u in urls)
        + f"  - url: {query}\n    keep_query: true\n"
        + "python:\n  wheelhouse: [../wheelhouse]\n"
    )
    data = Layout(tmp_path / "src")
    r = run_withcache("sync", "-q", "--data", str(data.root), "-m", str(m))
    assert r.returncode == 0, r.stderr
    plant(data, "https://dl.example/auto-filled.iso", os.urandom(30_000), source="auto")
    return data


def served(base: str, data: Layout) -> dict[str, tuple[int, str, str | None]]:
    """Every recorded artifact's cache URL -> (status, sha256 of the body, Last-Modified)."""
    out = {}
    for key in records(data):
        r = requests.get(base + keys.cache_path(key), timeout=10)
        out[keys.cache_path(key)] = (r.status_code, sha(r.content), r.headers.get("Last-Modified"))
    for page in ("/simple/", "/simple/wctest-local/"):
        r = requests.get(base + page, timeout=10)
        out[page] = (r.status_code, sha(r.content), None)
    return out


def test_export_then_import_serves_the_same_urls_with_the_same_bytes(
    site: Layout, tmp_path: Path
) -> None:
    tmp_path.chmod(0o755)  # nginx's www-data worker serves the imported copy from here
    bundle = tmp_path / "usb" / "cache.tar"
    bundle.parent.mkdir()
    r = run_withcache("export", "--data", str(site.root), str(bundle))
    assert r.returncode == 0, r.stderr
    assert "export: 12 artifacts" in r.stderr and "11 blobs" in r.stderr  # two share bytes
    assert not bundle.with_name("cache.tar.part").exists()
    dst = Layout(tmp_path / "dst")
    r = run_withcache("import", "--data", str(dst.root), str(bundle))
    assert r.returncode == 0, r.stderr
    assert "12 placed" in r.stderr
    assert assert_tree_matches_records(dst) == 12
    assert {k: (a.sha256, a.source) for k, a in records(dst).items()} == {
        k: (a.sha256, a.source) for k, a in records(site).items()
    }
    assert (dst.state / "manifests" / "main.yaml").read_bytes() == (
        site.root.parent / "manifests" / "main.yaml"
    ).read_bytes()
    a, b = start_nginx(site.root), start_nginx(dst.root)
    try:
        before, after = served(a.url, site), served(b.url, dst)
    finally:
        stop_nginx(a.proc)
        stop_nginx(b.proc)
    assert after == before
    assert all(status == 200 for status, _, _ in after.values())
    # a second import changes nothing and says so
    mtimes = {p: p.stat().st_mtime_ns for p in (dst.www / "b").rglob("@data")}
    r = run_withcache("import", "--data", str(dst.root), str(bundle))
    assert r.returncode == 0 and "0 placed (0 B), 12 already here" in r.stderr
    assert {p: p.stat().st_mtime_ns for p in (dst.www / "b").rglob("@data")} == mtimes


def test_a_directory_bundle_checks_with_sha256sum_and_streams_through_a_pipe(
    site: Layout, tmp_path: Path
) -> None:
    d = tmp_path / "bundle-dir"
    assert run_withcache("export", "--data", str(site.root), str(d), "--verify").returncode == 0
    check = subprocess.run(["sha256sum", "--quiet", "-c", "CONTENTS"], cwd=d, capture_output=True)
    assert check.returncode == 0, check.stdout
    header = json.loads((d / "BUNDLE.json").read_text())
    assert header["contents_sha256"] == sha((d / "CONTENTS").read_bytes())
    r = run_withcache("import", "--data", str(tmp_path / "from-dir"), str(d))
    assert r.returncode == 0 and "12 placed" in r.stderr, r.stderr
    # export - | import -: one stream, nothing written between
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    exp = subprocess.Popen(
        withcache_cmd("export", "-q", "--data", str(site.root), "-"),
        stdout=subprocess.PIPE,
        env=env,
    )
    imp = subprocess.run(
        withcache_cmd("import", "--data", str(tmp_path / "from-pipe"), "-"),
        stdin=exp.stdout,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert exp.wait(60) == 0 and imp.returncode == 0, imp.stderr
    assert "12 placed" in imp.stderr
    assert assert_tree_matches_records(Layout(tmp_path / "from-pipe")) == 12


def test_one_flipped_byte_refuses_that_artifact_by_name_and_imports_the_rest(
    site: Layout, tmp_path: Path
) -> None:
    bundle = tmp_path / "b.tar"
    assert run_withcache("export", "--data", str(site.root), str(bundle)).returncode == 0
    victim = next(a for a in records(site).values() if a.url.endswith("tool-3.tar.gz"))
    raw = bytearray(bundle.read_bytes())
    body = (site.www / keys.blob_relpath(victim.key)).read_bytes()
    at = raw.index(body[:4096]) + 1234
    raw[at] ^= 0x01
    bundle.write_bytes(bytes(raw))
    dst = Layout(tmp_path / "dst")
    r = run_withcache("import", "--data", str(dst.root), str(bundle))
    assert r.returncode == 1
    assert f"refused blobs/{victim.sha256} ({victim.url}): sha256 is " in r.stderr
    assert "11 placed" in r.stderr and "1 refused" in r.stderr
    held = records(dst)
    assert victim.key not in held and len(held) == 11
    assert assert_tree_matches_records(dst) == 11  # nothing unverified was placed
    assert not list(dst.partial.glob("import-*"))


def test_a_damaged_records_file_places_nothing_and_says_which_part(
    site: Layout, tmp_path: Path
) -> None:
    bundle = tmp_path / "b.tar"
    assert run_withcache("export", "--data", str(site.root), str(bundle)).returncode == 0
    raw = bytearray(bundle.read_bytes())
    raw[raw.index(b'"sha256": "') + 20] ^= 0x01  # inside records.jsonl
    bundle.write_bytes(bytes(raw))
    r = run_withcache("import", "--data", str(tmp_path / "dst"), str(bundle))
    assert r.returncode == 1
    assert "records.jsonl does not match CONTENTS; nothing placed" in r.stderr
    assert not list((tmp_path / "dst" / "www" / "b").rglob("@data"))


def test_a_cut_off_bundle_keeps_what_arrived_and_the_full_copy_completes_it(
    site: Layout, tmp_path: Path
) -> None:
    bundle = tmp_path / "b.tar"
    assert run_withcache("export", "--data", str(site.root), str(bundle)).returncode == 0
    cut = tmp_path / "cut.tar"
    data = bundle.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    dst = Layout(tmp_path / "dst")
    r = run_withcache("import", "--data", str(dst.root), str(cut))
    assert r.returncode == 1
    assert "the bundle is cut off" in r.stderr and "not in the bundle: http" in r.stderr
    placed = assert_tree_matches_records(dst)
    assert 0 < placed < 12
    r = run_withcache("import", "--data", str(dst.root), str(bundle))
    assert r.returncode == 0, r.stderr
    assert f"{12 - placed} placed" in r.stderr and f"{placed} already here" in r.stderr
    assert assert_tree_matches_records(dst) == 12


def test_since_and_a_manifest_subset_select_what_goes_in(site: Layout, tmp_path: Path) -> None:
    r = run_withcache("export", "--data", str(site.root), str(tmp_path / "all"), "--since", "2d")
    assert r.returncode == 0 and "12 artifacts" in r.stderr
    r = run_withcache(
        "export", "--data", str(site.root), str(tmp_path / "none"), "--since", "2999-01-01"
    )
    assert r.returncode == 0 and "export: 0 artifacts" in r.stderr
    sub = tmp_path / "sub.yaml"
    one = next(a for a in records(site).values() if a.url.endswith("tool-0.tar.gz"))
    sub.write_text(f"artifacts:\n  - {one.url}\n")
    out = tmp_path / "sub"
    r = run_withcache("export", "--data", str(site.root), str(out), "-m", str(sub))
    assert r.returncode == 0 and "export: 1 artifacts" in r.stderr
    assert bf.parse_records((out / "records.jsonl").read_bytes())[0].artifact.key == one.key
    assert (out / "manifests" / "sub.yaml").read_bytes() == sub.read_bytes()
    r = run_withcache("export", "--data", str(site.root), str(out), "--since", "yesterday")
    assert r.returncode == 2 and "is not a date (2026-11-01) or an age (7d)" in r.stderr


def test_bundle_parts_refuse_what_they_do_not_describe() -> None:
    with pytest.raises(bf.Damaged, match="line 2 is damaged"):
        bf.parse_contents(f"{'a' * 64}  records.jsonl\nnot a line\n".encode())
    line = json.dumps(
        {
            "key": "file:///etc/passwd",
            "url": "x",
            "name": "p",
            "size": 1,
            "sha256": "a" * 64,
            "fetched_at": 1,
            "source": "manifest",
        }
    )
    with pytest.raises(bf.Damaged, match="is not an http"):
        bf.parse_records(line.encode())
    assert bf.sha_of_blob("blobs/../../etc/passwd") is None
    assert not bf.is_page("python/simple/../../x/index.html")
    assert not bf.is_manifest("manifests/../state.db")
    with pytest.raises(bf.Damaged, match="not a withcache bundle"):
        bf.parse_header(b'{"format": "other"}')
