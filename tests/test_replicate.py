"""`withcache replicate`: a real sync, real rsync to local paths (and a loopback rsync
daemon), real nginx serving the center and the replica side by side."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import Cache, free_port, plant, run_withcache, start_nginx, stop_nginx
from tests.origin import Origin
from tests.trees import Tree, listed, sha256, www_files
from tests.watcher import Watcher
from withcache import keys, lock, replicate
from withcache.layout import Layout

pytestmark = pytest.mark.skipif(not shutil.which("rsync"), reason="rsync is not installed")


def build_tree(tmp: Path, origin: Origin) -> Tree:
    tmp.chmod(0o755)
    t = Tree(tmp, origin)
    for i in range(6):
        t.add_artifact(f"tool-{i}.tar.gz", 50_000 * (i + 1))
    t.add_wheel("wct-alpha", "1.0", payload=20_000)
    t.add_wheel("wct-beta", "2.0")
    t.sync()
    return t


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tree]:
    """One synced center for the tests that only read it."""
    origin = Origin()
    try:
        yield build_tree(tmp_path_factory.mktemp("replicate"), origin)
    finally:
        origin.close()


def replicate_to(tree: Tree, replica: Path) -> str:
    r = run_withcache("replicate", "--data", str(tree.data), str(replica))
    assert r.returncode == 0, r.stderr
    return r.stderr


@contextlib.contextmanager
def serving(tree: Tree, replica: Path) -> Iterator[tuple[Cache, Cache]]:
    """The center and its replica, each behind its own `withcache serve`."""
    center = start_nginx(tree.data)
    try:
        copy = start_nginx(replica)
        try:
            yield center, copy
        finally:
            stop_nginx(copy.proc)
    finally:
        stop_nginx(center.proc)


@pytest.fixture(scope="module")
def served(tree: Tree) -> Iterator[tuple[Cache, Cache, Path]]:
    replica = tree.tmp / "replica"
    replicate_to(tree, replica)
    with serving(tree, replica) as (center, copy):
        yield center, copy, replica


def snapshot_of(data: Path) -> dict[str, tuple[int, int]]:
    """inode and mtime of every file under www/: a copy would change both."""
    www = data / "www"
    return {
        str(p.relative_to(www)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in www.rglob("*")
        if p.is_file()
    }


def test_replica_serves_everything_the_center_lists_byte_identical(
    tree: Tree, served: tuple[Cache, Cache, Path]
) -> None:
    center, copy, replica = served
    assert www_files(replica) == www_files(tree.data)  # index, catalog, pages, blobs
    files = listed(copy.url)
    assert len({f.path for f in files}) >= 6 + 2 + 2  # artifacts, wheels, project pages
    for f in files:
        r = requests.get(copy.url + f.path, headers={"Accept": "text/html"}, timeout=10)
        assert r.status_code == 200, f
        if f.sha256:
            assert sha256(r.content) == f.sha256, f
        c = requests.get(center.url + f.path, headers={"Accept": "text/html"}, timeout=10)
        assert r.content == c.content
        # rsync keeps mtimes: a client resuming with If-Range may switch hosts
        assert r.headers.get("ETag") == c.headers.get("ETag")
        assert r.headers.get("Last-Modified") == c.headers.get("Last-Modified")
    for name, url in tree.artifacts.items():
        path = keys.cache_path(keys.normalize(url))
        assert requests.get(copy.url + path, timeout=10).content == tree.bodies[name]


def test_second_replicate_of_an_unchanged_tree_copies_nothing(
    tree: Tree, served: tuple[Cache, Cache, Path]
) -> None:
    _center, _copy, replica = served
    before = snapshot_of(replica)
    r = run_withcache("replicate", "--data", str(tree.data), str(replica))
    assert r.returncode == 0, r.stderr
    assert "unchanged" in r.stderr
    assert snapshot_of(replica) == before  # not one file rewritten
    assert not (tree.data / "state" / "replicate").exists()  # no snapshot left behind


def test_changes_arrive_pruned_files_leave_and_the_replica_keeps_its_own_state(
    tmp_path: Path, origin: Origin
) -> None:
    tree = build_tree(tmp_path, origin)
    replica = tmp_path / "replica"
    replicate_to(tree, replica)
    with serving(tree, replica) as (_center, copy):
        requests.get(copy.url + "/b/aHR0cHM6Ly9ub3doZXJlLmV4YW1wbGUveC5iaW4/x.bin", timeout=5)
        log = (replica / "log" / "access.log").read_bytes()
        assert log
        (replica / "state" / "mine.txt").write_text("the replica's own file")
        gone = keys.cache_path(keys.normalize(tree.artifacts["tool-0.tar.gz"]))
        tree.remove_artifact("tool-0.tar.gz")
        tree.remove_wheel("wct_beta-2.0-py3-none-any.whl")
        new_url = tree.add_artifact("new-1.0.bin", 70_000)
        tree.add_wheel("wct-gamma", "3.0")
        tree.sync()
        replicate_to(tree, replica)
        assert www_files(replica) == www_files(tree.data)
        assert requests.get(copy.url + gone, timeout=10).status_code == 404
        assert requests.get(copy.url + "/simple/wct-beta/", timeout=10).status_code == 404
        assert requests.get(copy.url + "/simple/wct-gamma/", timeout=10).status_code == 200
        new = requests.get(copy.url + keys.cache_path(keys.normalize(new_url)), timeout=10)
        assert new.content == tree.bodies["new-1.0.bin"]
    # what belongs to the replica itself is left alone
    assert (replica / "log" / "access.log").read_bytes().startswith(log)
    assert (replica / "state" / "mine.txt").read_text() == "the replica's own file"
    assert (replica / "run" / "nginx.conf").exists()
    assert str(tree.data.resolve()) in (replica / "state" / "replica.json").read_text()
    assert not (tree.data / "state" / "replica.json").exists()


def test_a_replica_counts_its_own_misses_and_keeps_the_centers_index(
    tree: Tree, served: tuple[Cache, Cache, Path]
) -> None:
    _center, copy, replica = served
    index = (replica / "www" / "index.html").read_bytes()
    w = Watcher(replica, replica / "log" / "access.log", "--index-every", "0.1")
    try:
        missing = keys.cache_path(keys.normalize("https://vendor.example/wanted-2.0.run"))
        for _ in range(3):
            assert requests.head(copy.url + missing, timeout=5).status_code == 404
        hit = listed(copy.url)[0].path
        assert requests.get(copy.url + hit, timeout=5).status_code == 200
        deadline = time.monotonic() + 20
        rows: list[tuple[str, int]] = []
        while time.monotonic() < deadline and not rows:
            with sqlite3.connect(replica / "state" / "withcache.db") as conn:
                try:
                    rows = conn.execute("SELECT url, count FROM misses WHERE count = 3").fetchall()
                except sqlite3.OperationalError:
                    rows = []
            time.sleep(0.1)
        assert rows == [("https://vendor.example/wanted-2.0.run", 3)]
        time.sleep(0.5)  # several index periods: a watcher on a center would re-render
    finally:
        assert w.term() == 0, w.stderr
    assert (replica / "www" / "index.html").read_bytes() == index


def test_sync_and_index_refuse_to_write_into_a_replica(
    tree: Tree, served: tuple[Cache, Cache, Path]
) -> None:
    _center, _copy, replica = served
    before = www_files(replica)
    manifest = tree.tmp / "center.yaml"
    for argv in (["sync", "-m", str(manifest)], ["index"]):
        r = run_withcache(*argv, "--data", str(replica))
        assert r.returncode == 2, r.stderr
        assert "is a replica of" in r.stderr and "runs at the center" in r.stderr
    assert www_files(replica) == before


def test_one_failing_destination_does_not_stop_the_others(tree: Tree, tmp_path: Path) -> None:
    ok = tmp_path / "ok-replica"
    r = run_withcache(
        "replicate",
        "--data",
        str(tree.data),
        f"rsync://127.0.0.1:{free_port()}/nomodule/x",  # no daemon: connection refused
        str(ok),
    )
    assert r.returncode == 1
    assert "1 of 2 replicas failed" in r.stderr and "/nomodule/x: failed: rsync" in r.stderr
    assert www_files(ok) == www_files(tree.data)


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("center", "the data dir itself or inside it"),
        ("center/www/copy", "the data dir itself or inside it"),
        (".", "contains the data dir"),
        ("--delete", "is not an rsync destination"),
    ],
)
def test_destinations_that_would_eat_the_tree_are_refused(
    tree: Tree, where: str, message: str
) -> None:
    before = www_files(tree.data)
    dest = where if where.startswith("-") else str(tree.tmp / where)
    r = run_withcache("replicate", "--data", str(tree.data), "--", dest)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert www_files(tree.data) == before
    assert not (tree.data / "www" / "copy").exists()


def test_a_running_sync_makes_replicate_refuse(tree: Tree, tmp_path: Path) -> None:
    replica = tmp_path / "r"
    with lock.hold(Layout(tree.data).lock, "busy"):
        r = run_withcache("replicate", "--data", str(tree.data), str(replica))
    assert r.returncode == 1
    assert "a sync is running" in r.stderr and "--wait" in r.stderr
    assert not (replica / "www" / "index.html").exists()  # nothing listed yet


def test_rsync_daemon_destination(tree: Tree, tmp_path: Path) -> None:
    """rsync://host/module: the same passes against a loopback rsync daemon."""
    module = tmp_path / "module"
    module.mkdir()
    port = free_port()
    conf = tmp_path / "rsyncd.conf"
    conf.write_text(
        f"pid file = {tmp_path}/rsyncd.pid\nuse chroot = false\n"
        f"[replica]\n  path = {module}\n  read only = false\n"
        f"  uid = {os.getuid()}\n  gid = {os.getgid()}\n"
    )
    daemon = subprocess.Popen(
        [
            "rsync",
            "--daemon",
            "--no-detach",
            f"--port={port}",
            f"--config={conf}",
            "--address=127.0.0.1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        dest = f"rsync://127.0.0.1:{port}/replica/site"
        deadline = time.monotonic() + 10
        while True:
            r = run_withcache("replicate", "--data", str(tree.data), dest)
            if r.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)  # the daemon is still starting
        assert r.returncode == 0, r.stderr
        assert www_files(module / "site") == www_files(tree.data)
        r = run_withcache("replicate", "--data", str(tree.data), dest)
        assert r.returncode == 0 and "unchanged" in r.stderr, r.stderr
    finally:
        daemon.terminate()
        daemon.wait(10)
        assert daemon.stderr is not None
        daemon.stderr.close()


def test_mirror_links_stay_links_and_private_index_rules_travel_first(tmp_path: Path) -> None:
    """A /m/ file is a hard link to its blob (one file on the replica too); the private
    indexes' definitions and read lists (state/) reach the replica with their modes, and
    a change to them alone is replicated; the replica's own metrics stay its own."""
    tmp_path.chmod(0o755)
    center = Layout(tmp_path / "center").ensure()
    key = plant(center, "https://distfiles.example/foo-1.0.tar.gz", b"distfile bytes")
    mirror_file = center.www / "m" / "gentoo" / "distfiles" / "ab" / "foo-1.0.tar.gz"
    mirror_file.parent.mkdir(parents=True)
    os.link(center.www / keys.blob_relpath(key), mirror_file)
    (center.state / "indexes.json").write_text('{"team": {"read": ["ci"]}}\n')
    (center.state / "auth").mkdir()
    read_list = center.state / "auth" / "team.read"
    read_list.write_text("ci:$2b$05$hash\n")
    read_list.chmod(0o640)
    (center.www / "metrics").write_text("# the center's\n")
    replica = tmp_path / "replica"
    (replica / "www").mkdir(parents=True)
    (replica / "www" / "metrics").write_text("# the replica's own\n")
    replicate_to_dir(center.root, replica)
    assert (replica / "www" / "metrics").read_text() == "# the replica's own\n"
    blob = replica / "www" / keys.blob_relpath(key)
    copy = replica / "www" / "m" / "gentoo" / "distfiles" / "ab" / "foo-1.0.tar.gz"
    assert copy.read_bytes() == b"distfile bytes"
    assert copy.stat().st_ino == blob.stat().st_ino  # stored once
    copied = replica / "state" / "auth" / "team.read"
    assert copied.read_text() == "ci:$2b$05$hash\n"
    assert copied.stat().st_mode & 0o777 == 0o640  # not made world-readable
    assert (replica / "state" / "indexes.json").read_text() == '{"team": {"read": ["ci"]}}\n'
    time.sleep(1.1)  # a new mtime second: rsync's quick check must see the change
    read_list.write_text("ci:$2b$05$otherhash\n")
    out = replicate_to_dir(center.root, replica)
    assert "unchanged" not in out
    assert copied.read_text() == "ci:$2b$05$otherhash\n"


def test_where_the_group_cannot_be_kept_read_lists_become_readable(tmp_path: Path) -> None:
    """A receiving user outside nginx's group cannot keep it (rsync exits 23): the read
    lists are then made readable by everyone, as `withcache users` does at a center."""
    tmp_path.chmod(0o755)
    center = Layout(tmp_path / "center").ensure()
    (center.state / "auth").mkdir()
    (center.state / "auth" / "team.read").write_text("ci:$2b$05$hash\n")
    (center.state / "auth" / "team.read").chmod(0o640)
    wrapper = tmp_path / "rsync-without-groups"
    wrapper.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do [ "$a" = -g ] && { echo "chgrp: Operation not permitted" >&2; '
        "exit 23; }; done\n"
        f'exec {shutil.which("rsync")} "$@"\n'
    )
    wrapper.chmod(0o755)
    replica = tmp_path / "replica"
    r = run_withcache(
        "replicate", "--data", str(center.root), str(replica), env={"WITHCACHE_RSYNC": str(wrapper)}
    )
    assert r.returncode == 0, r.stderr
    copied = replica / "state" / "auth" / "team.read"
    assert copied.read_text() == "ci:$2b$05$hash\n"
    assert copied.stat().st_mode & 0o777 == 0o644


def replicate_to_dir(data: Path, replica: Path) -> str:
    r = run_withcache("replicate", "--data", str(data), str(replica))
    assert r.returncode == 0, r.stderr
    return r.stderr


def test_a_page_rewritten_in_the_same_second_at_the_same_size_arrives(tmp_path: Path) -> None:
    """Two syncs within a second can leave a page at the same size and the same whole-
    second mtime (a replaced wheel: another sha256 of the same length). The replica must
    still get the new page; a stale one would list a blob the deletion pass removes."""
    center = Layout(tmp_path / "center").ensure()
    page = center.www / "catalog.json"
    page.write_text('{"sha256": "' + "a" * 64 + '"}')
    second = int(time.time()) * 1_000_000_000
    os.utime(page, ns=(second + 100, second + 100))
    replica = tmp_path / "replica"
    replicate_to_dir(center.root, replica)
    page.write_text('{"sha256": "' + "b" * 64 + '"}')
    os.utime(page, ns=(second + 900_000_000, second + 900_000_000))
    replicate_to_dir(center.root, replica)
    assert (replica / "www" / "catalog.json").read_text() == page.read_text()


def test_itemized_output_is_read_by_kind_and_depth() -> None:
    out = "\n".join(
        [
            "*deleting   www/b/old/@data",
            "cd+++++++++ www/b/new/",
            ">f+++++++++ www/b/new/@data",
            ">f.st...... www/m/gentoo/distfiles/ab/x y.tar.gz",
            ">f+++++++++ state/replica.json",
            ">f.st...... www/index.html",
            ">f+++++++++ www/simple/foo/index.html",
            ">f+++++++++ www/simple/foo/we\\#012ird",
            ".d..t...... www/simple/",
            'skipping non-regular file "www/link"',
            ">f+++++++++ elsewhere/x",
        ]
    )
    c = replicate.parse_itemized(out)
    assert (c.state, c.immutable, c.pages, c.deletions) == (1, 2, {1: 1, 3: 2}, 1)
    assert replicate.parse_itemized("").empty


DEPLOY = Path(__file__).resolve().parent.parent / "withcache" / "deploy"


def test_the_replicate_unit_runs_a_real_command_after_each_sync(tmp_path: Path) -> None:
    from withcache.cli import build_parser

    unit = (DEPLOY / "withcache-replicate.service").read_text()
    (line,) = [x for x in unit.splitlines() if x.startswith("ExecStart=")]
    argv = line.split()[1:]
    assert argv[0] == "replicate"
    ns = build_parser().parse_args([a.replace("$REPLICAS", "host:/srv/r") for a in argv])
    assert ns.wait and ns.dests == ["host:/srv/r"]
    dropin = (DEPLOY / "replicate-after-sync.conf").read_text()
    assert "OnSuccess=withcache-replicate.service" in dropin
    assert "OnFailure=withcache-replicate.service" in dropin
    if not shutil.which("systemd-analyze"):
        return
    units = tmp_path / "units"
    (units / "withcache-sync.service.d").mkdir(parents=True)
    for name in ("withcache-sync.service", "withcache-replicate.service"):
        shutil.copy(DEPLOY / name, units / name)
    shutil.copy(DEPLOY / "replicate-after-sync.conf", units / "withcache-sync.service.d")
    r = subprocess.run(
        ["systemd-analyze", "verify", "withcache-sync.service", "withcache-replicate.service"],
        capture_output=True,
        text=True,
        cwd=units,
        env=dict(os.environ, SYSTEMD_UNIT_PATH=f"{units}:"),
    )
    complaints = [
        x
        for x in (r.stdout + r.stderr).splitlines()
        if x.strip() and "is not executable" not in x and "/etc/withcache" not in x
    ]
    assert complaints == []
