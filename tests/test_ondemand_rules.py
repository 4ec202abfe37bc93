"""On-demand Python projects without nginx: the rules (names, globs, backoff, the
python: keys), the worker against a loopback upstream that fails in every way, the
incremental publish, and how a sync and the on-demand record share www/simple/."""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import run_withcache
from tests.origin import Origin
from tests.pyindex_upstream import thirty_projects
from withcache import fetch, manifest, report, store
from withcache.errors import ManifestError
from withcache.layout import Layout
from withcache.ondemand import OnDemand
from withcache.pyindex import attempts, demand, names, take
from withcache.pyindex.config import PythonConfig

JSON_TYPE = "application/vnd.pypi.simple.v1+json"

# ---------------------------------------------------------------- names and globs (pure)


@given(st.text(min_size=1, max_size=40))
def test_a_name_is_refused_or_normalised_idempotently(name: str) -> None:
    project = names.project(name)
    if project is None:
        return
    assert names.project(project) == project
    assert "/" not in project and "%" not in project and ".." not in project
    assert project == project.lower() and "_" not in project and "." not in project


@pytest.mark.parametrize(
    ("name", "project"),
    [
        ("Foo_Bar", "foo-bar"),
        ("foo.bar", "foo-bar"),
        ("FOO--_.bar", "foo-bar"),
        ("a", "a"),
        ("..", None),
        ("a/b", None),
        ("a%2fb", None),
        ("-a", None),
        ("a b", None),
        ("a\x00", None),
        ("x" * 128, "x" * 128),
        ("x" * 129, None),
    ],
)
def test_names(name: str, project: str | None) -> None:
    assert names.project(name) == project


def load_python(tmp: Path, text: str) -> PythonConfig:
    p = tmp / "m.yaml"
    p.write_text(textwrap.dedent(text).lstrip("\n"))
    (cfg,) = manifest.load([p]).python
    return cfg


def test_on_demand_all_or_globs_without_requirements(tmp_path: Path) -> None:
    cfg = load_python(
        tmp_path,
        """
        python:
          on_demand: all
          python: ["3.12"]
          platforms: [any]
          refresh: 15m
        """,
    )
    assert cfg.on_demand == ("*",) and cfg.refresh == 900 and not cfg.requirements
    assert cfg.takes("anything")
    cfg = load_python(
        tmp_path,
        """
        python:
          on_demand: [torch*, Nvidia_*, "scikit.learn"]
          python: ["3.12"]
          platforms: [any]
        """,
    )
    assert cfg.on_demand == ("torch*", "nvidia-*", "scikit-learn")
    assert cfg.takes("torchvision") and cfg.takes("nvidia-cudnn-cu12")
    assert cfg.takes("scikit-learn") and not cfg.takes("numpy") and not cfg.takes("xtorch")
    assert cfg.refresh is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  on_demand: some\n", ["python.on_demand must be 'all' or a list"]),
        ("  on_demand: []\n", ["python.on_demand must not be empty"]),
        ("  on_demand: [a/b, 'x%2f', ok, OK]\n", [
            "python.on_demand: 'a/b' is not a project name glob",
            "python.on_demand: 'x%2f' is not a project name glob",
            "python.on_demand: duplicate 'OK'",
        ]),
        ("  on_demand: all\n  refresh: soon\n", ["python.refresh: 'soon' is not a duration"]),
        ("  on_demand: all\n  refresh: 0s\n", ["python.refresh must be at least 1s"]),
    ],
)  # fmt: skip
def test_on_demand_problems(tmp_path: Path, text: str, expected: list[str]) -> None:
    p = tmp_path / "m.yaml"
    p.write_text("python:\n  python: ['3.12']\n  platforms: [any]\n" + text)
    with pytest.raises(ManifestError) as exc:
        manifest.load([p])
    got = [q.message for q in exc.value.problems]
    assert len(got) == len(expected), got
    for g, e in zip(got, expected, strict=True):
        assert g.startswith(e), (g, e)


def test_on_demand_needs_targets(tmp_path: Path) -> None:
    p = tmp_path / "m.yaml"
    p.write_text("python:\n  on_demand: all\n")
    with pytest.raises(ManifestError) as exc:
        manifest.load([p])
    assert [q.message for q in exc.value.problems] == [
        "python: needs 'python' to resolve for",
        "python: needs 'platforms' to resolve for",
    ]


@pytest.mark.parametrize(
    ("status", "failures", "wait"),
    [("taken", 0, 0), ("absent", 0, 3600), ("failed", 1, 60), ("failed", 2, 120),
     ("failed", 7, 3600), ("failed", 30, 3600)],
)  # fmt: skip
def test_negative_cache_and_backoff(status: str, failures: int, wait: float) -> None:
    previous = None
    for _ in range(max(1, failures)):
        previous = attempts.next_row(previous, "p", status, "why", 1000.0)
    assert previous is not None
    assert previous.retry_at - previous.at == wait
    assert previous.attempts == failures


# ---------------------------------------------------------------- the worker


@pytest.fixture
def upstream() -> Iterator[Origin]:
    origin = Origin()
    thirty_projects().publish(origin)
    origin.add("/json/simple/od-broken/", b"", status=500)
    origin.add("/json/simple/od-garbage/", b"<<<>>>", headers={"Content-Type": JSON_TYPE})
    origin.add("/json/simple/od-html-junk/", b"\x00\xff", headers={"Content-Type": "text/plain"})
    origin.add("/json/simple/od-slow/", b"{}", delay=2.0, headers={"Content-Type": JSON_TYPE})
    yield origin
    origin.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def config(tmp: Path, index: str, extra: str = "") -> PythonConfig:
    return load_python(
        tmp,
        f"""
        python:
          index: {index}
          on_demand: [od-*]
          python: ["3.11"]
          platforms: [manylinux_2_28_x86_64]
        {extra}""",
    )


def run_worker(worker: OnDemand, offered: list[str], expect: int) -> None:
    worker.offer(offered)
    deadline = time.monotonic() + 60
    while worker.handled < expect:
        assert time.monotonic() < deadline, "the worker did not finish"
        time.sleep(0.02)


def rows(layout: Layout) -> dict[str, attempts.Attempt]:
    conn = store.connect(layout.db)
    try:
        return {
            p: a
            for p in ("od-broken", "od-garbage", "od-html-junk", "od-slow", "od-app")
            if (a := attempts.get(conn, p))
        }
    finally:
        conn.close()


def test_upstream_failures_are_recorded_reported_and_retried_after_a_backoff(
    data: Layout, upstream: Origin, tmp_path: Path
) -> None:
    cfg = config(tmp_path, upstream.base + "/json/simple/")
    wall = Clock()
    settings = take.Settings(data.state / "uv-cache", fetch.Policy(read_timeout=0.5, attempts=1))
    worker = OnDemand(data, [cfg], settings=settings, wall=wall).start()
    try:
        bad = ["od-broken", "od-garbage", "od-html-junk", "od-slow"]
        run_worker(worker, bad, 4)
        got = rows(data)
        assert {p: a.status for p, a in got.items()} == dict.fromkeys(bad, "failed")
        assert "HTTP 500" in got["od-broken"].detail
        assert "od-garbage" in got["od-garbage"].detail and "JSON" in got["od-garbage"].detail
        assert "not a simple-index page" in got["od-html-junk"].detail
        assert "timed out" in got["od-slow"].detail
        assert not (data.www / "simple").exists()  # nothing published
        out = report_text(data)
        assert "Python projects that could not be taken on demand (4):" in out
        assert "od-broken: " in out and "HTTP 500" in out and "attempt 1" in out

        asked = len(upstream.seen("/json/simple/od-broken/"))
        run_worker(worker, ["od-broken"], 5)  # within the backoff: no request
        assert len(upstream.seen("/json/simple/od-broken/")) == asked
        wall.now += attempts.backoff(1) + 1
        run_worker(worker, ["od-broken"], 6)  # after it: tried again, and backs off longer
        assert len(upstream.seen("/json/simple/od-broken/")) == asked + 1
        again = rows(data)["od-broken"]
        assert again.attempts == 2 and again.retry_at - again.at == attempts.backoff(2)

        upstream.add("/json/simple/od-broken/", b"", status=404)  # gone for good
        wall.now += attempts.backoff(2) + 1
        run_worker(worker, ["od-broken", "od-app"], 8)
        assert rows(data)["od-broken"].status == "absent"
        assert rows(data)["od-app"].status == "taken"
        assert (data.www / "simple" / "od-app" / "index.v1json").is_file()
    finally:
        worker.close()
    c = counters(data)
    assert c["ondemand_failed"] == 5 and c["ondemand_backoff"] == 1
    assert c["ondemand_absent"] == 1 and c["ondemand_taken"] == 1


def test_offer_refuses_names_and_globs_and_dedupes(data: Layout, tmp_path: Path) -> None:
    cfg = config(tmp_path, "http://127.0.0.1:9/simple/")  # never reached
    worker = OnDemand(data, [cfg], queue_size=2, wall=Clock())  # not started: offer() only
    assert worker.offer(["..", "a%2fb", "x" * 129, "numpy", "NumPy"]) == 0
    assert worker.offer(["od-a", "OD_A", "od.a", "od-b", "od-c"]) == 2
    worker.close()
    c = counters(data)
    assert c["ondemand_refused"] == 3 and c["ondemand_outside"] == 2
    assert c["ondemand_queue_full"] == 1


def counters(layout: Layout) -> dict[str, int]:
    conn = store.connect(layout.db)
    try:
        return store.counters(conn)
    finally:
        conn.close()


def report_text(layout: Layout) -> str:
    import io

    out = io.StringIO()
    report.run(layout, "text", out, peek=True)
    return out.getvalue()


# ---------------------------------------------------------------- publishing


def test_publishing_one_project_touches_only_its_pages_and_the_root(
    data: Layout, upstream: Origin, tmp_path: Path
) -> None:
    cfg = config(tmp_path, upstream.base + "/json/simple/")
    settings = take.Settings(data.state / "uv-cache")
    assert take.take(data, cfg, "od-lib-22", settings).status == "taken"  # 22 -> 23
    simple = data.www / "simple"
    before = {p: p.stat().st_mtime_ns for p in simple.rglob("index.*")}
    time.sleep(0.01)
    out = take.take(data, cfg, "od-app", settings)
    assert out.status == "taken" and set(out.published) == {
        "od-app",
        *(f"od-dep-{i}" for i in range(1, 6)),
    }
    after = {p: p.stat().st_mtime_ns for p in simple.rglob("index.*")}
    changed = {p.relative_to(simple).parts[0] for p in after if after[p] != before.get(p)}
    assert changed == {*out.published, "index.html", "index.v1json"}
    root = json.loads((simple / "index.v1json").read_text())
    assert [p["name"] for p in root["projects"]] == sorted(
        ["od-lib-22", "od-lib-23", *out.published]
    )


def test_sync_keeps_projects_taken_on_demand_and_adopts_them_once_added(
    data: Layout, upstream: Origin, tmp_path: Path
) -> None:
    """A sync writes every page from both records (under the index lock), so it never
    drops what the watcher published; once `withcache add --python` puts the project in
    a manifest, the next sync owns it and the flag goes."""
    m = tmp_path / "manifests" / "python.yaml"
    m.parent.mkdir()
    m.write_text(
        f"python:\n  index: {upstream.base}/json/simple/\n  # the lab's list\n"
        "  requirements: [od-listed]\n  on_demand: [od-*]\n"
        '  python: ["3.11"]\n  platforms: [manylinux_2_28_x86_64]\n'
    )
    cfg = manifest.load([m]).python[0]
    assert take.take(data, cfg, "od-app", take.Settings(data.state / "uv-cache")).status == "taken"

    def sync() -> None:
        r = run_withcache("sync", "--data", str(data.root), "-m", str(m.parent), "--prune")
        assert r.returncode == 0, r.stderr

    sync()
    root = json.loads((data.www / "simple" / "index.v1json").read_text())
    assert {p["name"] for p in root["projects"]} == {"od-listed", "od-app", *DEPS}
    assert set(demand.pending(data)) == {"od-app", *DEPS}

    r = run_withcache("add", "--python", "OD_App", "--against", str(m.parent))
    assert r.returncode == 0, r.stderr
    assert "  requirements: [od-listed, od-app]\n" in m.read_text()
    assert "# the lab's list" in m.read_text()  # edited as text: comments stay
    r = run_withcache("add", "--python", "od-app", "--against", str(m.parent))
    assert r.returncode == 2 and "already in python.requirements: od-app" in r.stderr
    sync()
    assert demand.pending(data) == {}
    assert demand.load(data).taken == {}  # adopted: sync resolves it itself now
    conn = store.connect(data.db)
    try:
        sources = {a.name: a.source for a in store.artifacts(conn).values()}
    finally:
        conn.close()
    assert sources["od_app-1.0-py3-none-any.whl"] == "python"


DEPS = [f"od-dep-{i}" for i in range(1, 6)]


def test_narrowing_the_globs_drops_the_project_and_prune_its_files(
    data: Layout, upstream: Origin, tmp_path: Path
) -> None:
    cfg = config(tmp_path, upstream.base + "/json/simple/")
    assert take.take(data, cfg, "od-app", take.Settings(data.state / "uv-cache")).status == "taken"
    m = tmp_path / "m.yaml"
    m.write_text(
        f"python:\n  index: {upstream.base}/json/simple/\n  requirements: [od-listed]\n"
        '  on_demand: [other-*]\n  python: ["3.11"]\n  platforms: [manylinux_2_28_x86_64]\n'
    )
    r = run_withcache("sync", "--data", str(data.root), "-m", str(m), "--prune")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (data.www / "simple").iterdir() if p.is_dir()) == ["od-listed"]
    conn = store.connect(data.db)
    try:
        left = {a.source for a in store.artifacts(conn).values()}
    finally:
        conn.close()
    assert left == {"python"}
    assert not list((data.www / "b").rglob("*od_app*"))  # pruned with --prune


def test_a_take_waits_for_the_index_lock_and_a_sync_render_keeps_its_pages(
    data: Layout, upstream: Origin, tmp_path: Path
) -> None:
    """The two writers of www/simple/ take turns: a take does not write while sync's last
    step holds the lock, and that step, run after it, keeps what the take published."""
    import threading

    from withcache.pyindex import model, publish
    from withcache.pyindex.model import IndexPlan

    cfg = config(tmp_path, upstream.base + "/json/simple/")
    model.save(data, IndexPlan())  # sync's plan: nothing of its own
    result: list[take.Outcome] = []
    with publish.held(data):  # as sync's publish step does
        worker = threading.Thread(
            target=lambda: result.append(
                take.take(data, cfg, "od-app", take.Settings(data.state / "uv-cache"))
            )
        )
        worker.start()
        deadline = time.monotonic() + 60
        while not all(upstream.seen(f"/json/simple/{d}/") for d in DEPS):  # resolved, pages read
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.5)  # the take now waits for the lock: it fetches and writes nothing
        assert not any((data.www / "b").iterdir())  # nothing fetched either
        assert not (data.www / "simple" / "od-app").exists()
        assert not demand.record_path(data).exists()
    worker.join(60)
    assert result and result[0].status == "taken"
    publish.render(data, [cfg])  # sync's last step, after the take
    root = json.loads((data.www / "simple" / "index.v1json").read_text())
    assert {p["name"] for p in root["projects"]} == {"od-app", *DEPS}
