#!/usr/bin/env python3
"""ondemand: Python projects taken on demand by the watcher (python.on_demand).

Everything on loopback; wheels built here (tests/pyindex_upstream.py), no network.
  - first 404 to served: a project nobody listed, with 5 dependencies (256 KiB wheels,
    PEP 658 metadata), is asked for at `withcache serve` (nginx answers 404), and the
    real watcher takes it: page read, uv resolves for 2 targets, 7 files fetched and
    placed, 6 pages and the root written. Timed from the 404 until all 6 pages and the
    app's wheel are served. A new project each round (nothing cached). Baseline:
    `withcache sync` of a manifest listing an equal project in `requirements`, into an
    empty data dir (what an operator would run to serve it). Target: <= 10 s.
  - publish into 1,000: an index of 1,000 projects already written; the record and
    pages of one more project taken on demand (what a take writes after its downloads)
    vs `publish.render` of the whole index (what publishing without incrementality
    costs). Target: <= 0.5 s.
--quick: 3 rounds, an index of 300 projects.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import common as c
import requests

from tests.origin import Origin
from tests.pyindex_upstream import Upstream
from withcache import keys, placement, store
from withcache.layout import Layout
from withcache.pyindex import demand, model, publish
from withcache.pyindex.config import PythonConfig
from withcache.pyindex.model import IndexFile, IndexPlan

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
TAKES_ALL = PythonConfig("bench.yaml", 1, python=("3.12",), platforms=("any",), on_demand=("*",))
PAYLOAD = 256 * 1024
TAG = "py3-none-any"


def payload(seed: str) -> bytes:
    return hashlib.shake_256(seed.encode()).digest(PAYLOAD)


def add_app(up: Upstream, name: str) -> list[str]:
    """`name` with 5 dependencies; returns the 6 project names."""
    deps = [f"{name}-dep-{i}" for i in range(1, 6)]
    up.add(name, "1.0", deps, payload=payload(name), pep658=True)
    for d in deps:
        up.add(d, "1.0", payload=payload(d), pep658=True)
    return [name, *deps]


def manifest(path: Path, index: str, requirements: list[str] | None) -> Path:
    reqs = f"  requirements: [{', '.join(requirements)}]\n" if requirements else ""
    on_demand = "" if requirements else "  on_demand: all\n"
    path.write_text(
        f"python:\n  index: {index}\n{reqs}{on_demand}"
        '  python: ["3.11", "3.12"]\n  platforms: [manylinux_2_28_x86_64]\n'
    )
    return path


@contextlib.contextmanager
def watcher(data: Path, m: Path) -> Iterator[None]:
    """The real `withcache watch`, following the log nginx writes, up before we ask."""
    log = data / "log" / "access.log"
    argv = [*c.WITHCACHE, "watch", "-q", "--data", str(data), "--log", str(log), "-m", str(m)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not checkpointed(data):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the watcher did not start")
            time.sleep(0.05)
        yield
    finally:
        c.stop(proc)  # type: ignore[arg-type]


def checkpointed(data: Path) -> bool:
    db = data / "state" / "withcache.db"
    if not db.exists():
        return False
    try:
        conn = sqlite3.connect(db, timeout=5)
        try:
            return conn.execute("SELECT count(*) FROM log_offsets").fetchone()[0] > 0
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return False


def served(session: requests.Session, base: str, projects: list[str]) -> bool:
    for p in projects:
        r = session.get(f"{base}/simple/{p}/", headers={"Accept": JSON_TYPE}, timeout=5)
        if r.status_code != 200:
            return False
        if p == projects[0]:
            href = r.json()["files"][0]["url"]
            if session.get(base + href, timeout=5).status_code != 200:
                return False
    return True


def bench_first_404(table: c.Table, runs: int) -> None:
    with c.tmpdir("bench-ondemand-404") as tmp:
        up = Upstream()
        apps = [add_app(up, f"bench-app-{r}") for r in range(runs)]
        bases = [add_app(up, f"bench-base-{r}") for r in range(runs)]
        origin = Origin()
        try:
            up.publish(origin)
            index = origin.base + "/json/simple/"
            data = tmp / "data"
            m = manifest(tmp / "ondemand.yaml", index, None)
            c.run([*c.WITHCACHE, "sync", "-q", "--data", str(data), "-m", str(m)])
            port = c.free_port()
            serve = [*c.WITHCACHE, "serve", "--data", str(data), "--listen", f"127.0.0.1:{port}"]
            base = f"http://127.0.0.1:{port}"
            ours: list[float] = []
            sync: list[float] = []
            with c.serving(serve, port), watcher(data, m), requests.Session() as session:
                for r in range(runs):
                    listed = manifest(tmp / f"listed-{r}.yaml", index, [bases[r][0]])
                    fresh = tmp / f"sync-{r}"
                    c.settle()
                    t0 = time.perf_counter()
                    c.run([*c.WITHCACHE, "sync", "-q", "--data", str(fresh), "-m", str(listed)])
                    sync.append(time.perf_counter() - t0)
                    shutil.rmtree(fresh, ignore_errors=True)
                    c.settle()
                    t0 = time.perf_counter()
                    first = session.get(f"{base}/simple/{apps[r][0]}/", timeout=5)
                    assert first.status_code == 404, first.status_code
                    deadline = t0 + 60
                    while not served(session, base, apps[r]):
                        if time.perf_counter() > deadline:
                            raise RuntimeError(f"{apps[r][0]} not served after 60 s")
                        time.sleep(0.02)
                    ours.append(time.perf_counter() - t0)
        finally:
            origin.close()
    what = "unlisted project + 5 deps, 2 targets"
    table.add(
        f"{what}: withcache sync of it listed, empty data dir",
        c.Stats(sync),
        "s",
        baseline=True,
        note="resolve, 6 pages read, 12 files, every page and index rendered",
    )
    table.add(
        f"{what}: first 404 to pages and files served",
        c.Stats(ours),
        "s",
        paired=True,
        limit=10.0,
        note="watcher: page probe, resolve, 12 files, 6 pages + root",
    )


def fake_index(layout: Layout, projects: int) -> IndexPlan:
    """An index of `projects` projects, one small wheel each, placed and rendered."""
    items: list[placement.Item] = []
    files: list[IndexFile] = []
    for i in range(projects):
        name = f"proj-{i:04d}"
        item, f = _placed(layout, name)
        items.append(item)
        files.append(f)
    conn = store.connect(layout.db)
    try:
        for i in range(0, len(items), 500):
            placement.install_many(layout, conn, items[i : i + 500])
    finally:
        conn.close()
    plan = IndexPlan(files)
    model.save(layout, plan)
    publish.render(layout, [TAKES_ALL])
    return plan


def _placed(layout: Layout, name: str) -> tuple[placement.Item, IndexFile]:
    filename = f"{name.replace('-', '_')}-1.0-{TAG}.whl"
    url = f"https://up.example/files/{filename}"
    key = keys.normalize(url)
    body = f"wheel {name}".encode()
    part = layout.partial / (hashlib.sha256(key.encode()).hexdigest() + ".bench")
    verified = placement.copy_in(layout, io.BytesIO(body), part, None)
    item = placement.Item(verified, key=key, url=url, source="python")
    f = IndexFile(name, filename, key, url, verified.sha256, where="bench.yaml:1")
    return item, f


def bench_publish(table: c.Table, runs: int, projects: int) -> None:
    with c.tmpdir("bench-ondemand-publish") as tmp:
        layout = Layout(tmp / "data").ensure()
        fake_index(layout, projects)
        incremental: list[float] = []
        full: list[float] = []
        for r in range(runs):
            name = f"taken-{r}"
            item, f = _placed(layout, name)
            conn = store.connect(layout.db)
            try:
                placement.install(layout, conn, item)
            finally:
                conn.close()
            c.settle()
            t0 = time.perf_counter()
            with publish.held(layout):
                record = demand.load(layout)
                record.taken[name] = demand.Taken(name, "https://up.example/", "b:1", 0.0, 0.0, [f])
                demand.save(layout, record)
                written = publish.render_projects(layout, {name})
            incremental.append(time.perf_counter() - t0)
            assert set(written) == {name}
            c.settle()
            t0 = time.perf_counter()
            publish.render(layout, [TAKES_ALL])  # every page of the same index
            full.append(time.perf_counter() - t0)
        pages = sum(1 for _ in (layout.www / "simple").glob("*/index.html"))
        assert pages == projects + runs, pages
    what = f"publish 1 project into an index of {projects:,}"
    table.add(f"{what}: every page (publish.render)", c.Stats(full), "s", baseline=True)
    table.add(
        f"{what}: its pages and the root (render_projects)",
        c.Stats(incremental),
        "s",
        paired=True,
        limit=0.5,
        note="record saved, 2 pages + root written and fsynced",
    )


def main() -> int:
    args = c.parse_args("ondemand")
    runs = args.runs or (3 if args.quick else 5)
    table = c.Table("ondemand", args.json)
    if not c.have("nginx"):
        table.skip("first 404 to served", "nginx is not installed")
    else:
        bench_first_404(table, runs)
    bench_publish(table, runs, 300 if args.quick else 1000)
    return table.finish()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())
