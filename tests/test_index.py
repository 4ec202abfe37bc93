"""The index: every artifact listed, hostile text escaped, and it renders in a browser."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.conftest import plant
from withcache import index, keys, store
from withcache.layout import Layout

EVIL = "https://evil.example/<script>alert(1)</script>\"'&.bin"


class Collector(HTMLParser):
    """Tags, links and script bodies, to check what a browser would run."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.scripts: list[str] = []
        self.rows = 0
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.links.extend(v or "" for k, v in attrs if k == "href")
        if tag == "tr":
            self.rows += 1
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts.append(data)


def test_index_lists_every_artifact_with_details(data: Layout) -> None:
    urls = [f"https://vendor.example/pkg/file-{i}.tar.gz" for i in range(5)]
    for i, u in enumerate(urls):
        plant(data, u, bytes(i * 1000))
    assert index.render(data) == 5
    html = (data.www / "index.html").read_text()
    doc = Collector()
    doc.feed(html)
    for u in urls:
        assert keys.cache_path(keys.normalize(u)) in doc.links
        assert u in html
    assert "3.9 KiB" in html  # sizes are human
    catalog = json.loads((data.www / "catalog.json").read_text())
    assert catalog["count"] == 5
    first = catalog["artifacts"][0]
    assert set(first) >= {"name", "url", "cache_path", "size", "sha256", "fetched_at", "hits"}
    assert first["fetched_at"].endswith("Z")


def test_hostile_urls_are_escaped(data: Layout) -> None:
    plant(data, EVIL, b"x")
    conn = store.connect(data.db)
    conn.execute(
        "INSERT INTO misses (key, url, count, first_seen, last_seen) VALUES (?, ?, 1, 0, 0)",
        (
            "https://x.example/<img src=x onerror=alert(2)>",
            "https://x.example/<img src=x onerror=alert(2)>",
        ),
    )
    conn.close()
    index.render(data)
    html = (data.www / "index.html").read_text()
    assert "<script>alert(1)" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    doc = Collector()
    doc.feed(html)
    assert all("alert" not in s for s in doc.scripts)


def test_empty_index_says_what_to_do(data: Layout) -> None:
    index.render(data)
    assert "No artifacts yet" in (data.www / "index.html").read_text()


def test_reproducible_without_timestamp(data: Layout) -> None:
    plant(data, "https://vendor.example/a.bin", b"a")
    index.render(data, timestamp=False)
    first = (data.www / "index.html").read_bytes()
    index.render(data, timestamp=False)
    assert (data.www / "index.html").read_bytes() == first
    assert json.loads((data.www / "catalog.json").read_text())["generated"] is None


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_renders_in_headless_chromium(data: Layout, tmp_path: Path) -> None:
    """A real browser lays the page out, runs its script (sort + filter) without errors."""
    for i in range(30):
        plant(
            data,
            f"https://developer.vendor.example/compute/cuda/12.{i}/cuda_12.{i}_linux.run",
            bytes(i * 4096),
        )
    index.render(data)
    page = data.www / "index.html"
    shot = tmp_path / "index.png"
    profile = tmp_path / "profile"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
    ]
    r = subprocess.run(
        [CHROMIUM, *flags, "--window-size=1400,900", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.exists() and shot.stat().st_size > 10_000, r.stderr[-2000:]
    # the DOM after scripts ran: the filter box, all 30 rows, and no script error text
    dom = subprocess.run(
        [CHROMIUM, *flags, "--dump-dom", page.as_uri() + "#cuda_12.7_"],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert 'id="filter"' in dom
    assert dom.count("<tr") == 31
    assert dom.count("<tr hidden") == 29  # the #fragment pre-filled the filter: one row shown
    assert "1 shown" in dom
