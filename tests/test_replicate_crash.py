"""kill -9 of `withcache replicate` at random moments, while a client keeps checking the
replica: every file its catalog, index page and Python pages list must answer 200,
with the listed bytes. The center changes between kills (new artifacts and wheels,
pruned ones), so every kill lands on a replicate that has blobs to copy, pages to
replace and files to delete. 5 kills by default, 20 with WITHCACHE_LONG=1."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import LONG, ROOT, Cache, start_nginx, stop_nginx, withcache_cmd
from tests.origin import Origin
from tests.trees import Listed, Tree, listed, sha256, www_files

pytestmark = pytest.mark.skipif(not shutil.which("rsync"), reason="rsync is not installed")

KILLS = 20 if LONG else 5
BWLIMIT = "--rsync-arg=--bwlimit=2m"  # stretch the blob pass so kills land inside it


class Checker(threading.Thread):
    """HEADs every listed file, GETs those with a listed sha256, until stopped."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.stopping = threading.Event()
        self.violations: list[str] = []
        self.checked = 0
        self.session = requests.Session()

    def run(self) -> None:
        deadline = time.monotonic() + 120  # bounded whatever happens
        while not self.stopping.is_set() and time.monotonic() < deadline:
            try:
                self.sweep()
            except requests.RequestException as exc:
                self.violations.append(f"request failed: {exc}")

    def sweep(self) -> None:
        for f in listed(self.base, self.session):
            r = self.session.head(self.base + f.path, timeout=5)
            if r.status_code != 200 and self.still_listed(f):
                self.violations.append(f"{f.path} listed by {f.page}: HEAD {r.status_code}")
            elif f.sha256 and r.status_code == 200:
                body = self.session.get(self.base + f.path, timeout=10).content
                if sha256(body) != f.sha256:
                    self.violations.append(f"{f.path} listed by {f.page}: wrong bytes")
            self.checked += 1

    def still_listed(self, f: Listed) -> bool:
        """A 404 for a file that a page listed before and still lists afterwards was
        listed the whole time (no key comes back once pruned, here)."""
        return any(g.path == f.path and g.page == f.page for g in listed(self.base, self.session))

    def stop(self) -> None:
        self.stopping.set()
        self.join(30)
        self.session.close()


def change(tree: Tree, n: int, rng: random.Random) -> None:
    """One round of center changes: 3 new artifacts, 2 pruned, a wheel in and a wheel out."""
    for i in range(3):
        tree.add_artifact(f"r{n}-{i}.bin", rng.randrange(200_000, 1_500_000))
    for name in rng.sample(sorted(tree.artifacts), 2):
        tree.remove_artifact(name)
    tree.add_wheel(f"wct-p{n}", "1.0", payload=rng.randrange(1_000, 200_000))
    wheels = sorted(p.name for p in tree.wheelhouse.glob("*.whl"))
    tree.remove_wheel(rng.choice(wheels[:-1]))
    tree.sync()


def replicate_cmd(tree: Tree, replica: Path) -> list[str]:
    return withcache_cmd("replicate", "--data", str(tree.data), BWLIMIT, str(replica))


def run_replicate(tree: Tree, replica: Path) -> float:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t0 = time.monotonic()
    r = subprocess.run(
        replicate_cmd(tree, replica), env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr
    return time.monotonic() - t0


def kill_replicate_after(tree: Tree, replica: Path, delay: float) -> None:
    """Start replicate in a session of its own and SIGKILL it and its rsync children."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        replicate_cmd(tree, replica),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        proc.wait(delay)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(30)


@pytest.fixture
def world(tmp_path: Path, origin: Origin) -> Iterator[tuple[Tree, Path, Cache]]:
    tmp_path.chmod(0o755)
    tree = Tree(tmp_path, origin)
    for i in range(8):
        tree.add_artifact(f"base-{i}.bin", 100_000 * (i + 1))
    for i in range(4):
        tree.add_wheel(f"wct-base{i}", "1.0", payload=10_000)
    tree.sync()
    replica = tmp_path / "replica"
    run_replicate(tree, replica)
    cache = start_nginx(replica)
    try:
        yield tree, replica, cache
    finally:
        stop_nginx(cache.proc)


def test_kill9_replicate_never_exposes_a_missing_or_wrong_file(
    world: tuple[Tree, Path, Cache],
) -> None:
    tree, replica, cache = world
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    change(tree, 0, rng)
    full = run_replicate(tree, replica)  # how long one round takes here, now
    violations: list[str] = []
    checked = 0
    for n in range(1, KILLS + 1):
        change(tree, n, rng)
        checker = Checker(cache.url)
        checker.start()
        delay = rng.uniform(0, full * 1.2)
        try:
            kill_replicate_after(tree, replica, delay)
            time.sleep(0.3)  # the replica as the kill left it
        finally:
            checker.stop()
        violations += [f"kill {n} after {delay:.2f}s: {v}" for v in checker.violations]
        checked += checker.checked
    run_replicate(tree, replica)
    last = Checker(cache.url)
    last.sweep()
    assert violations + last.violations == []
    assert checked > 0 and last.checked > 0
    assert www_files(replica) == www_files(tree.data)  # temp files and partials cleaned too
