"""Python projects taken on demand, end to end: a loopback upstream index of 30 projects
(built here), a real `withcache sync`, real nginx, the real watcher, and real uv and pip
installing into fresh environments. Then refresh (new releases, yanks, 304s) and the
bad-input rules (a typo flood, refused names, an upstream that fails)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.conftest import LONG, Cache, run_withcache, start_nginx, stop_nginx
from tests.origin import Origin, Seen
from tests.pyindex_install import (
    clean_env,
    installed,
    pip_install,
    pip_venv,
    uv_bin,
    uv_install,
    uv_venv,
)
from tests.pyindex_upstream import Upstream, thirty_projects
from tests.watcher import Watcher, checkpoint, db
from withcache.watch import KNOWN_CLIENTS

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
APP = ["od-app", "od-dep-1", "od-dep-2", "od-dep-3", "od-dep-4", "od-dep-5"]


def wait_for(what: str, ok: Callable[[], bool], timeout: float = 20.0) -> float:
    """Poll until ok() (bounded); return the seconds it took."""
    started = time.monotonic()
    while not ok():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - started


def manifest_text(index: str, extra: str = "", on_demand: str = "[od-*]") -> str:
    return (
        textwrap.dedent(f"""\
        python:
          index: {index}
          requirements: [od-listed]
          on_demand: {on_demand}
          python: ["3.11", "3.12"]
          platforms: [manylinux_2_28_x86_64]
        """)
        + extra
    )


@dataclass
class World:
    """An upstream, a synced data dir served by nginx, and a watcher following it."""

    tmp: Path
    up: Upstream
    origin: Origin
    cache: Cache
    watcher: Watcher
    manifest: Path

    @property
    def index(self) -> str:
        return self.cache.url + "/simple/"

    @property
    def upstream_index(self) -> str:
        return self.origin.base + "/json/simple/"

    def served(self, project: str) -> bool:
        r = requests.get(f"{self.index}{project}/", headers={"Accept": JSON_TYPE}, timeout=5)
        return r.status_code == 200

    def root(self) -> set[str]:
        r = requests.get(self.index, headers={"Accept": JSON_TYPE}, timeout=5)
        return {p["name"] for p in r.json()["projects"]}

    def page(self, project: str) -> dict[str, object]:
        r = requests.get(f"{self.index}{project}/", headers={"Accept": JSON_TYPE}, timeout=5)
        assert r.status_code == 200, (project, r.status_code)
        doc: dict[str, object] = r.json()
        return doc

    def sync(self, *extra: str) -> subprocess.CompletedProcess[str]:
        data = str(self.cache.data)
        return run_withcache("sync", "--data", data, "-m", str(self.manifest), *extra)

    def upstream_pages(self, prefix: str = "", since: int = 0) -> list[str]:
        """Paths of upstream project pages requested (after the first `since` requests)."""
        base = "/json/simple/" + prefix
        return [s.path for s in self.origin.seen()[since:] if s.path.startswith(base)]


def make_world(
    tmp: Path, extra: str = "", watch_args: tuple[str, ...] = (), on_demand: str = "[od-*]"
) -> World:
    tmp.chmod(0o755)  # nginx's workers (www-data when run as root) read the data dir
    up = thirty_projects()
    origin = Origin()
    up.publish(origin)
    manifest = tmp / "python.yaml"
    manifest.write_text(manifest_text(origin.base + "/json/simple/", extra, on_demand))
    r = run_withcache("sync", "--data", str(tmp / "data"), "-m", str(manifest))
    assert r.returncode == 0, r.stderr
    cache = start_nginx(tmp / "data")
    w = Watcher(
        cache.data, cache.access_log, "-m", str(manifest), "--index-every", "1", *watch_args
    )
    wait_for(
        "the watcher's first checkpoint",
        lambda: checkpoint(cache.data, cache.access_log) is not None,
    )
    return World(tmp, up, origin, cache, w, manifest)


def close_world(w: World) -> None:
    w.watcher.stop()
    stop_nginx(w.cache.proc)
    w.origin.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = make_world(tmp_path_factory.mktemp("ondemand"))
    try:
        yield w
    finally:
        close_world(w)


def recipe_env(cache_index: str, upstream: str) -> dict[str, str]:
    """The README's uv recipe, as environment variables: the cache first, the upstream
    for a project the cache does not have yet."""
    env = clean_env()
    env["UV_INDEX"] = f"withcache={cache_index}"
    env["UV_DEFAULT_INDEX"] = upstream
    return env


def test_uv_installs_an_unlisted_project_first_time_and_the_cache_fills(
    world: World, tmp_path: Path
) -> None:
    assert world.root() == {"od-listed"}  # the cache lists 1 project
    py = uv_venv(tmp_path / "venv")
    started = time.monotonic()
    r = subprocess.run(
        [uv_bin(), "pip", "install", "--python", str(py), "--cache-dir", str(tmp_path / "uvc"),
         "od-app"],
        capture_output=True, text=True, env=recipe_env(world.index, world.upstream_index),
        timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert installed(py) == {p: "1.0" for p in APP}
    wait_for(
        "all six projects served and listed",
        lambda: all(world.served(p) for p in APP) and world.root() == {"od-listed", *APP},
        timeout=10,
    )
    assert time.monotonic() - started <= 10.0
    page = world.page("od-app")
    (f,) = page["files"]  # type: ignore[misc]
    assert f["url"].startswith("/b/") and f["core-metadata"]  # our bytes, PEP 658 kept

    # pip's recipe: the upstream as the index, the cache as the extra index
    py = pip_venv(tmp_path / "pip-recipe")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "--isolated", "install",
         "--no-cache-dir", "--index-url", world.upstream_index,
         "--extra-index-url", world.index, "od-lib-21"],
        capture_output=True, text=True, env=clean_env(), timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert installed(py) == {"od-lib-21": "1.0", "od-lib-22": "1.0", "od-lib-23": "1.0"}
    chain = ["od-lib-21", "od-lib-22", "od-lib-23"]
    wait_for("the chain served", lambda: all(world.served(p) for p in chain), timeout=10)

    world.origin.close()  # from here on, only the cache can answer
    py = uv_venv(tmp_path / "uv-alone")
    r = uv_install(py, world.index, tmp_path / "uvc2", "od-app")  # uv --no-config
    assert r.returncode == 0, r.stderr
    assert installed(py) == {p: "1.0" for p in APP}
    py = pip_venv(tmp_path / "pip-alone")
    r = pip_install(py, world.index, "od-app")  # pip --isolated
    assert r.returncode == 0, r.stdout + r.stderr
    assert installed(py) == {p: "1.0" for p in APP}


def test_index_catalog_and_report_flag_projects_taken_on_demand(world: World) -> None:
    requests.get(world.index + "od-app/", timeout=5)  # taken already, or now (run alone)
    wait_for("od-app taken", lambda: world.served("od-app"), timeout=30)
    taken = set(APP)
    if (world.cache.data / "www" / "simple" / "od-lib-21").is_dir():  # the first test's pip
        taken |= {"od-lib-21", "od-lib-22", "od-lib-23"}

    def catalog() -> dict[str, object]:
        doc: dict[str, object] = json.loads((world.cache.data / "www" / "catalog.json").read_text())
        return doc

    def flagged() -> set[str]:
        return {p["project"] for p in catalog().get("python_on_demand", [])}  # type: ignore[attr-defined]

    wait_for("the catalog", lambda: flagged() == taken)
    assert all(p["in_manifest"] is False for p in catalog()["python_on_demand"])  # type: ignore[attr-defined]
    sources = {a["name"].split("-1.0")[0]: a["source"] for a in catalog()["artifacts"]}  # type: ignore[attr-defined]
    assert sources["od_listed"] == "python" and sources["od_app"] == "ondemand"
    html = (world.cache.data / "www" / "index.html").read_text()
    assert "on demand, not yet in a manifest" in html
    r = run_withcache(
        "report", "--data", str(world.cache.data), "--peek", "-m", str(world.manifest)
    )
    assert f"Python projects on demand, not yet in a manifest ({len(taken)}):" in r.stdout
    assert "od-app (new, taken" in r.stdout


def pages_mtimes(data: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in (data / "www" / "simple").rglob("index.*")}


def test_refresh_shows_new_releases_and_yanks_and_a_304_costs_nothing(tmp_path: Path) -> None:
    w = make_world(tmp_path, extra="  refresh: 2s\n")
    try:
        assert requests.get(w.index + "od-app/", timeout=5).status_code == 404
        wait_for("od-app taken", lambda: all(w.served(p) for p in APP))
        # upstream: 1.0 yanked, 2.0 released
        app1 = next(d for d in w.up.dists if d.project == "od-app")
        app1.yanked = "broken build"
        w.up.add("od-app", "2.0", [f"od-dep-{i}" for i in range(1, 6)], pep658=True)
        w.up.publish(w.origin)

        def files() -> dict[str, object]:
            return {f["filename"]: f["yanked"] for f in w.page("od-app")["files"]}  # type: ignore[attr-defined]

        wait_for("the watcher's refresh", lambda: len(files()) == 2, timeout=30)
        assert files() == {
            "od_app-1.0-py3-none-any.whl": "broken build",  # still listed, shown yanked
            "od_app-2.0-py3-none-any.whl": False,
        }

        # unchanged upstream: conditional requests answered 304, no page written
        def app_pages_after(n: int) -> int:
            return sum(1 for s in w.origin.seen()[n:] if s.path == "/json/simple/od-app/")

        seen = len(w.origin.seen())
        wait_for("the next refresh", lambda: app_pages_after(seen) >= 1)  # the last one is done
        before = pages_mtimes(w.cache.data)
        seen = len(w.origin.seen())

        def pages_after(n: int) -> list[Seen]:
            return [s for s in w.origin.seen()[n:] if s.path.startswith("/json/simple/od-")]

        # two whole refreshes of the 6 projects (a refresh asks for them one after another)
        wait_for("two more refreshes", lambda: len(pages_after(seen)) >= 12, timeout=15)
        later = pages_after(seen)
        assert all(s.headers.get("If-None-Match") == w.origin.routes[s.path].etag for s in later), [
            (s.path, s.headers.get("If-None-Match")) for s in later
        ]
        assert pages_mtimes(w.cache.data) == before
        r = w.sync("--refresh")
        assert r.returncode == 0, r.stderr
        assert "6 unchanged, 0 read" in r.stderr
        assert pages_mtimes(w.cache.data) == before
    finally:
        close_world(w)


def counters(data: Path) -> dict[str, int]:
    conn = db(data)
    try:
        return dict(conn.execute("SELECT name, value FROM counters WHERE name LIKE 'ondemand_%'"))
    finally:
        conn.close()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


BAD = [
    "/simple/../",
    "/simple/..%2f..%2fetc/",
    "/simple/od-a%2fb/",
    "/simple/od-%2e%2e/",
    "/simple/od-a%00/",
    "/simple/od-" + "x" * 150 + "/",  # a valid shape, too long to be a project: refused
    "/simple/zz-outside-the-globs/",
]
DROPPED = ("absent", "failed", "backoff", "over_rate", "queue_full", "refused", "outside")


def test_a_typo_flood_costs_at_most_the_cap_and_memory_stays_flat(tmp_path: Path) -> None:
    """1,000 distinct names nobody publishes in well under a minute (30,000 over a few
    minutes with WITHCACHE_LONG=1), at most 5 resolutions a minute: at most 5 upstream
    requests a minute, the rest dropped and counted. Memory is compared from the point
    where the watcher's bounded memory of stored misses (KNOWN_CLIENTS) is full, or
    from the 200th name in the short run, which stays far below it."""
    cap = 5
    warm, total = (KNOWN_CLIENTS, KNOWN_CLIENTS + 10_000) if LONG else (200, 1_000)
    w = make_world(tmp_path, watch_args=("--on-demand-rate", str(cap)))
    try:
        session = requests.Session()
        start = len(w.origin.seen())

        def flood(names: range) -> None:
            for i in names:
                r = session.get(f"{w.index}od-typo-{i:05d}/", timeout=5)
                assert r.status_code == 404

        def handled() -> int:
            c = counters(w.cache.data)
            return sum(c.get(f"ondemand_{k}", 0) for k in DROPPED) - 2  # refused + outside

        started = time.monotonic()
        for path in BAD:  # refused before any upstream request
            session.get(w.cache.url + path, timeout=5)
        flood(range(warm))
        wait_for(f"{warm} handled", lambda: handled() >= warm, timeout=60 + warm // 100)
        rss_before = rss_kib(w.watcher.proc.pid)
        flood(range(warm, total))
        wait_for(f"{total} handled", lambda: handled() >= total, timeout=120)
        rss_after = rss_kib(w.watcher.proc.pid)
        minutes = math.ceil((time.monotonic() - started) / 60)  # 1 unless WITHCACHE_LONG
        probes = w.upstream_pages("od-typo-")
        assert 1 <= len(probes) <= cap * minutes, probes
        assert w.upstream_pages(since=start) == probes  # nothing else reached the upstream
        c = counters(w.cache.data)
        assert c["ondemand_absent"] == len(probes)  # the upstream said 404: remembered
        assert c["ondemand_over_rate"] + c.get("ondemand_queue_full", 0) == total - len(probes)
        assert rss_after - rss_before < 8 * 1024, (rss_before, rss_after)
        # the names the upstream said 404 to cost nothing for a while (negative cache)
        for path in probes:
            assert (
                session.get(w.cache.url + path.replace("/json", ""), timeout=5).status_code == 404
            )
        wait_for(
            "backoff counted",
            lambda: counters(w.cache.data).get("ondemand_backoff", 0) >= len(probes),
        )
        assert len(w.upstream_pages("od-typo-")) == len(probes)
        r = run_withcache("report", "--data", str(w.cache.data), "--peek")
        assert f"{len(probes):,} not on the upstream" in r.stdout
        assert "dropped (over the rate cap)" in r.stdout
    finally:
        close_world(w)
