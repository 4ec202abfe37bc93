"""The sync pipeline as a whole: the lock comes first, a dry run writes nothing, and every
writer places through the one placement routine (it waits for the placement lock)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import run_withcache, withcache_cmd
from tests.origin import Origin
from tests.pyindex_upstream import Upstream, build_wheel
from withcache import fetch, keys, store
from withcache.autofill import AutoFill
from withcache.layout import Layout

ROOT = Path(__file__).resolve().parent.parent


def listing(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under root (directories included) with its size and mtime."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            p = Path(dirpath, name)
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    st = root.stat()
    out["."] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture
def upstream() -> Iterator[tuple[Origin, str]]:
    """A loopback Python index with a small project and a URL artifact beside it."""
    up = Upstream()
    up.add("wctest-pipe", "1.0", ["wctest-dep"])
    up.add("wctest-dep", "1.0")
    origin = Origin()
    up.publish(origin)
    origin.add("/files/tool-1.0.tar.gz", b"tool bytes " * 1000)
    yield origin, origin.base
    origin.close()


def manifest_file(tmp: Path, base: str, extra: str = "") -> Path:
    m = tmp / "m.yaml"
    m.write_text(
        textwrap.dedent(f"""\
        artifacts:
          - {base}/files/tool-1.0.tar.gz
        python:
          index: {base}/json/simple/
          requirements: [wctest-pipe]
          python: ["3.11"]
          platforms: [any]
        """)
        + extra
    )
    return m


def test_dry_run_on_a_new_data_dir_creates_nothing(
    tmp_path: Path, upstream: tuple[Origin, str]
) -> None:
    _, base = upstream
    m = manifest_file(tmp_path, base)
    data = tmp_path / "data"
    r = run_withcache("sync", "--dry-run", "--data", str(data), "-m", str(m))
    assert r.returncode == 0, r.stderr
    assert "fetch  " in r.stdout and "tool-1.0.tar.gz" in r.stdout
    assert "wctest_pipe-1.0" in r.stdout and "wctest_dep-1.0" in r.stdout  # resolved, shown
    assert not data.exists()


def test_dry_run_on_a_synced_data_dir_changes_no_file_or_mtime(
    tmp_path: Path, upstream: tuple[Origin, str]
) -> None:
    _, base = upstream
    m = manifest_file(tmp_path, base)
    data = tmp_path / "data"
    assert run_withcache("sync", "-q", "--data", str(data), "-m", str(m)).returncode == 0
    # one more entry, so the dry run has something to say
    m2 = manifest_file(tmp_path, base, "")
    m2.write_text(m2.read_text().replace("tool-1.0.tar.gz", "tool-1.0.tar.gz\n  - " + base + "/x"))
    before = listing(data)
    time.sleep(0.02)  # an mtime written now would differ
    r = run_withcache("sync", "--dry-run", "--data", str(data), "-m", str(m2))
    assert r.returncode == 0, r.stderr
    assert f"fetch  {base}/x" in r.stdout
    assert "3 to fetch" not in r.stdout and "present" in r.stdout
    assert listing(data) == before


@contextmanager
def holding(path: Path) -> Iterator[None]:
    """flock a lock file from outside withcache, as another process would."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, b"424242\n", 0)
        yield
    finally:
        os.close(fd)


def test_a_refused_sync_changes_nothing_and_runs_no_resolver(
    tmp_path: Path, upstream: tuple[Origin, str]
) -> None:
    origin, base = upstream
    m = manifest_file(tmp_path, base)
    data = tmp_path / "data"
    assert run_withcache("sync", "-q", "--data", str(data), "-m", str(m)).returncode == 0
    lay = Layout(data)
    plan = (lay.state / "pyindex.json").read_bytes()
    before = listing(data / "state")
    asked = len(origin.seen())
    with holding(lay.lock):
        r = run_withcache("sync", "--data", str(data), "-m", str(m))
    assert r.returncode == 1
    assert "another sync is running" in r.stderr and "pid 424242" in r.stderr
    assert "resolved" not in r.stderr  # uv never ran
    assert len(origin.seen()) == asked  # not one request to the upstream
    assert (lay.state / "pyindex.json").read_bytes() == plan
    after = listing(data / "state")
    lockfile = str(lay.lock.relative_to(data / "state"))
    assert {k: v for k, v in after.items() if k not in {lockfile, "."}} == {
        k: v for k, v in before.items() if k not in {lockfile, "."}
    }


# --- every writer waits for the placement lock ----------------------------------------


def blobs(data: Path) -> list[Path]:
    return [p for p in (data / "www" / "b").rglob("@data")]


def wait_until(cond: object, seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def assert_waits_for_placement(data: Path, start: object, done: object) -> None:
    """Hold place.lock; the writer must download but place nothing until it is freed."""
    lay = Layout(data).ensure()
    with holding(lay.state / "place.lock"):
        proc = start()  # type: ignore[operator]
        time.sleep(1.5)  # ample time to download a few KiB from loopback
        assert blobs(data) == [], "placed while another process held the placement lock"
    assert wait_until(done), "did not place after the lock was released"
    if isinstance(proc, subprocess.Popen):
        assert proc.wait(30) == 0


def test_sync_places_through_the_placement_lock(tmp_path: Path, origin: Origin) -> None:
    url = origin.add("/a.bin", b"a" * 5000)
    m = tmp_path / "m.yaml"
    m.write_text(f"artifacts:\n  - {url}\n")
    data = tmp_path / "data"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    assert_waits_for_placement(
        data,
        lambda: subprocess.Popen(
            withcache_cmd("sync", "-q", "--data", str(data), "-m", str(m)), env=env
        ),
        lambda: len(blobs(data)) == 1,
    )


def test_wheelhouse_places_through_the_placement_lock(tmp_path: Path) -> None:
    wh = tmp_path / "wheelhouse"
    wh.mkdir()
    name, body, _meta = build_wheel("wctest-local", "0.1", [])
    (wh / name).write_bytes(body)
    m = tmp_path / "m.yaml"
    m.write_text("python:\n  wheelhouse: [wheelhouse]\n")
    data = tmp_path / "data"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    assert_waits_for_placement(
        data,
        lambda: subprocess.Popen(
            withcache_cmd("sync", "-q", "--data", str(data), "-m", str(m)), env=env
        ),
        lambda: len(blobs(data)) == 1,
    )


def test_auto_fill_places_through_the_placement_lock(tmp_path: Path, origin: Origin) -> None:
    url = origin.add("/auto.bin", b"z" * 5000)
    data = tmp_path / "data"
    lay = Layout(data).ensure()
    fill = AutoFill(lay, ["127.0.0.1"], policy=fetch.Policy(attempts=1))
    key = keys.normalize(url)
    try:
        assert_waits_for_placement(data, lambda: fill.offer([key]), lambda: len(blobs(data)) == 1)
    finally:
        fill.close()
    conn = store.connect(lay.db)
    try:
        assert store.artifacts(conn)[key].source == "auto"
    finally:
        conn.close()
