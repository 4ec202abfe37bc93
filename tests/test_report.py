"""`withcache report`: news since the previous report, silence otherwise (cron mails output)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import plant, run_withcache
from tests.origin import Origin
from tests.test_watch import nginx_line
from withcache import keys
from withcache.cli import main
from withcache.layout import Layout
from withcache.report import _code

Feed = Callable[..., None]
Report = Callable[..., tuple[int, str]]
MISS_A = "https://vendor.example/a.run"
MISS_B = "https://vendor.example/b.run"


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str]]:
    """The CLI in-process (`main(argv)`, as an operator's shell would run it)."""

    def run(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        assert not err, err
        return code, out

    return run


@pytest.fixture
def feed(data: Layout, cli: Callable[..., tuple[int, str]]) -> Callable[..., None]:
    """Append lines to the log `serve` writes and let the watcher read them."""

    def append(*lines: bytes) -> None:
        data.log_dir.mkdir(parents=True, exist_ok=True)
        with data.access_log.open("ab") as f:
            f.write(b"".join(lines))
        assert cli("watch", "--once", "-q", "--data", str(data.root)) == (0, "")

    return append


@pytest.fixture
def report(data: Layout, cli: Callable[..., tuple[int, str]]) -> Callable[..., tuple[int, str]]:
    def run(*args: str) -> tuple[int, str]:
        return cli("report", "--data", str(data.root), *args)

    return run


def test_a_second_report_in_a_row_prints_nothing_and_exits_0(feed: Feed, report: Report) -> None:
    feed(
        nginx_line(keys.cache_path(MISS_A), method="HEAD"),
        nginx_line(keys.cache_path(MISS_A)),
    )
    code, first = report()
    assert code == 0
    assert "New misses (1)" in first and MISS_A in first and "2" in first
    assert report() == (0, "")
    assert report("--format", "json") == (0, "")


def test_nothing_at_all_is_no_news(report: Report) -> None:
    assert report() == (0, "")


def test_only_what_is_new_is_news_and_traffic_counts_since_the_previous_report(
    data: Layout, feed: Feed, report: Report
) -> None:
    hit = "https://vendor.example/tool.tgz"
    plant(data, hit, b"x" * 100)
    feed(
        nginx_line(keys.cache_path(MISS_A)),
        nginx_line(keys.cache_path(hit), 200, nbytes=100),
    )
    assert "New misses (1)" in report()[1]
    feed(nginx_line(keys.cache_path(hit), 200, nbytes=100))
    assert report() == (0, "")  # a hit alone is no news
    feed(
        nginx_line(keys.cache_path(MISS_B)),
        nginx_line(keys.cache_path(MISS_A)),
        nginx_line(keys.cache_path(hit), 206, nbytes=50),
    )
    doc = json.loads(report("--format", "json")[1])
    assert [m["url"] for m in doc["new_misses"]] == [MISS_B]
    assert [(m["url"], m["new_requests"], m["count"]) for m in doc["requested_again"]] == [
        (MISS_A, 1, 2)
    ]
    t = doc["traffic"]
    # since the previous *report*: the hit fed before the silent one counts too
    assert (t["hits"], t["hit_bytes"], t["misses"]) == (2, 150, 2)
    assert t["hit_ratio"] == pytest.approx(0.5)
    assert doc["top_artifacts"] == [{"name": "tool.tgz", "url": hit, "hits": 2, "bytes": 150}]
    assert doc["disk"]["artifacts"] == 1 and doc["disk"]["used"] == 100
    assert doc["disk"]["free"] > 0


def test_peek_shows_without_marking(feed: Feed, report: Report) -> None:
    feed(nginx_line(keys.cache_path(MISS_A)))
    assert MISS_A in report("--peek")[1]
    assert MISS_A in report()[1]
    assert report() == (0, "")


def test_a_failed_sync_is_news(
    data: Layout, origin: Origin, tmp_path: Path, report: Report
) -> None:
    gone = origin.add("/vendor/gone.bin", b"", status=404)
    manifest = tmp_path / "m.yaml"
    manifest.write_text(f"artifacts:\n  - {gone}\n")
    s = run_withcache("sync", "--data", str(data.root), "-m", str(manifest), "-q", "--retries", "0")
    assert s.returncode == 1
    _, text = report()
    assert "Failed to sync (1)" in text and gone in text and "404" in text
    assert report() == (0, "")


def test_every_format_says_the_same_and_html_is_written_for_the_index(
    data: Layout, feed: Feed, report: Report
) -> None:
    feed(nginx_line("/simple/Torch/"), nginx_line(keys.cache_path(MISS_A)))
    _, md = report("--format", "markdown", "--peek")
    assert md.startswith("## withcache report")
    assert "`requirements: [torch]`" in md and f"`{MISS_A}`" in md
    _, js = report("--format", "json", "--peek")
    doc = json.loads(js)
    assert {m["url"] for m in doc["new_misses"]} == {"torch", MISS_A}
    assert doc["news"] is True
    _, html = report("--html")
    page = data.www / "report.html"
    assert page.read_text() == html
    assert page.stat().st_mode & 0o777 == 0o644  # nginx's worker reads it
    assert "requirements: [torch]" in html
    assert 'href="report.html"' in (data.www / "index.html").read_text()
    assert report("--html") == (0, "")
    assert page.read_text() == html  # the latest report stays in place


@pytest.mark.parametrize(
    "hostile",
    ["a`b", "``x``", "|col|", "`", "<script>alert(1)</script>", "tab\there\x1b[2J"],
)
def test_markdown_code_spans_cannot_be_broken_out_of(hostile: str) -> None:
    span = _code(hostile)
    fence = span[: len(span) - len(span.lstrip("`"))]
    inner = span[len(fence) : len(span) - len(fence)]
    assert fence not in inner.strip(" ")  # no run of backticks as long as the fence inside
    assert "|" not in inner.replace("\\|", "")
    assert "\x1b" not in span and "\t" not in span
