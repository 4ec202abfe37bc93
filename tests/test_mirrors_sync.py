"""Mirror sync against three real loopback origins: fallback, pins, links, crashes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import LONG, ROOT, plant, run_withcache, withcache_cmd
from tests.mirrorkit import (
    assert_mirror_tree_sound,
    b2_dir,
    blob,
    link,
    mirror_manifest,
    records,
    rows,
    same_inode,
    sha,
)
from tests.origin import Origin
from withcache import keys
from withcache.cli import main
from withcache.layout import Layout


@pytest.fixture
def three() -> Iterator[tuple[Origin, Origin, Origin]]:
    os_ = (Origin(), Origin(), Origin())
    yield os_
    for o in os_:
        o.close()


def sync(data: Layout, m: Path, *extra: str) -> int:
    return main(["sync", "--data", str(data.root), "-m", str(m), "-q", *extra])


def test_three_sources_one_sync_lands_every_file_and_names_its_source(
    three: tuple[Origin, Origin, Origin], data: Layout, tmp_path: Path
) -> None:
    a, b, c = three
    bodies = {f"pool/f{i}.tgz": os.urandom(50_000 + i) for i in range(7)}
    paths = list(bodies)
    # f0: the first source has it. f1: first lacks it, second 500s, third has it.
    # f2: first lacks, second stalls past the timeout. f3: first lacks, second has it.
    # f4: first answers 500, second lacks it. f5: first drops the connection mid-body.
    # f6: first and second lack it.
    a.add("/a/" + paths[0], bodies[paths[0]])
    a.add("/a/" + paths[4], status=500)
    a.add("/a/" + paths[5], bodies[paths[5]], drop_after=1000)
    b.add("/" + paths[1], status=500)
    b.add("/" + paths[2], bodies[paths[2]], delay=4.0)
    b.add("/" + paths[3], bodies[paths[3]])
    for p in paths:
        c.add("/c/" + p, bodies[p])
    m = mirror_manifest(
        tmp_path / "m.yaml", "lab", [f"{a.base}/a/", f"{b.base}/", f"{c.base}/c/"], paths
    )
    t0 = time.monotonic()
    assert sync(data, m, "--timeout", "1", "--retries", "0") == 0
    assert time.monotonic() - t0 < 30
    served = {p: rows(data)[f"lab/{p}"][1] for p in paths}
    assert served == {
        paths[0]: f"{a.base}/a/{paths[0]}",
        paths[1]: f"{c.base}/c/{paths[1]}",
        paths[2]: f"{c.base}/c/{paths[2]}",
        paths[3]: f"{b.base}/{paths[3]}",
        paths[4]: f"{c.base}/c/{paths[4]}",
        paths[5]: f"{c.base}/c/{paths[5]}",
        paths[6]: f"{c.base}/c/{paths[6]}",
    }
    recs = records(data)
    for p, body in bodies.items():
        key = keys.normalize(f"{a.base}/a/{p}")  # one store: keyed by the first source
        assert recs[key] == (sha(body), "mirror", len(body))
        assert blob(data, key).read_bytes() == body
        assert same_inode(link(data, "lab", p), blob(data, key))
    assert assert_mirror_tree_sound(data) == len(bodies)
    assert not [p for p in data.partial.iterdir() if p.suffix == ".part"]
    # a second sync costs no request at all
    before = len(a.requests) + len(b.requests) + len(c.requests)
    assert sync(data, m) == 0
    assert len(a.requests) + len(b.requests) + len(c.requests) == before


@pytest.mark.parametrize("algo", ["sha256", "blake2b", "sha512"])
def test_a_pin_mismatch_at_the_first_source_takes_the_next(
    three: tuple[Origin, Origin, Origin], data: Layout, tmp_path: Path, algo: str
) -> None:
    a, b, c = three
    good, bad = os.urandom(30_000), os.urandom(30_000)
    a.add("/x/distfiles/f.tgz", bad)
    b.add("/distfiles/f.tgz", good)
    c.add("/distfiles/f.tgz", bad)
    pin = hashlib.new(algo, good).hexdigest()
    m = mirror_manifest(
        tmp_path / "m.yaml",
        "g",
        [f"{a.base}/x/", f"{b.base}/", f"{c.base}/"],
        [f"path: distfiles/f.tgz\n{algo}: {pin}"],
    )
    assert sync(data, m) == 0
    key, served_by, _ = rows(data)["g/distfiles/f.tgz"]
    assert served_by == f"{b.base}/distfiles/f.tgz"
    assert link(data, "g", "distfiles/f.tgz").read_bytes() == good
    assert blob(data, key).read_bytes() == good
    assert not c.requests  # the second source passed: the third was never asked


def test_every_source_wrong_exits_1_and_places_nothing(
    three: tuple[Origin, Origin, Origin], data: Layout, tmp_path: Path
) -> None:
    a, b, c = three
    good = os.urandom(20_000)
    for o in three:
        o.add("/f.tgz", os.urandom(20_000))
    m = mirror_manifest(
        tmp_path / "m.yaml",
        "g",
        [a.base, b.base, c.base],
        [f"path: f.tgz\nsha256: {sha(good)}\nblake2b: {hashlib.blake2b(good).hexdigest()}"],
    )
    r = run_withcache("sync", "--data", str(data.root), "-m", str(m))
    assert r.returncode == 1
    assert "no source served it" in r.stderr and "sha256 mismatch" in r.stderr
    assert "1 of 1 downloads failed" in r.stderr
    assert records(data) == {} and rows(data) == {}
    assert not (data.www / "m").exists()
    assert not list((data.www / "b").iterdir())
    assert not [p for p in data.partial.rglob("*.part")]
    for o in three:
        assert len(o.seen("/f.tgz", "GET")) == 1


def test_size_and_blake2b_pins_are_checked_after_the_download(
    three: tuple[Origin, Origin, Origin], data: Layout, tmp_path: Path
) -> None:
    a, b, _ = three
    good = os.urandom(10_000)
    a.add("/f.tgz", good + b"!")  # right prefix, one byte too many
    b.add("/f.tgz", good)
    m = mirror_manifest(
        tmp_path / "m.yaml",
        "g",
        [a.base, b.base],
        [f"path: f.tgz\nsize: {len(good)}\nblake2b: {hashlib.blake2b(good).hexdigest()}"],
    )
    assert sync(data, m) == 0
    assert rows(data)["g/f.tgz"][1] == f"{b.base}/f.tgz"
    assert link(data, "g", "f.tgz").read_bytes() == good


def test_gentoo_layout_links_distfiles_at_blake2b_dirs_and_writes_layout_conf(
    three: tuple[Origin, Origin, Origin], data: Layout, tmp_path: Path
) -> None:
    a, b, _ = three
    names = ["foo-1.2.tar.gz", "bar-2.0.tar.xz", "gtk+-2.24.33.tar.xz", "which-2.23.tar.gz"]
    bodies = {n: os.urandom(5000) for n in names}
    for n, body in bodies.items():
        b.add(f"/gentoo/distfiles/{b2_dir(n)}/{n}", body)
    m = mirror_manifest(
        tmp_path / "m.yaml", "gentoo", [a.base, f"{b.base}/gentoo/"], names, layout="gentoo"
    )
    assert sync(data, m) == 0
    conf = data.www / "m" / "gentoo" / "distfiles" / "layout.conf"
    assert conf.read_text() == "[structure]\n0=filename-hash BLAKE2B 8\n"
    assert conf.stat().st_mode & 0o777 == 0o644
    for n, body in bodies.items():
        path = link(data, "gentoo", f"distfiles/{b2_dir(n)}/{n}")
        assert path.read_bytes() == body
        key = keys.normalize(f"{a.base}/distfiles/{b2_dir(n)}/{n}")
        assert same_inode(path, blob(data, key))
        assert path.stat().st_mode & 0o777 == 0o644
    # layout: gentoo removed from the manifest: layout.conf goes, the files stay
    mirror_manifest(tmp_path / "m.yaml", "gentoo", [a.base, f"{b.base}/gentoo/"], [])
    assert sync(data, m) == 0
    assert not conf.exists()
    assert assert_mirror_tree_sound(data) == len(bodies)


def test_a_file_held_through_b_is_linked_and_a_lost_link_relinked_without_network(
    origin: Origin, data: Layout, tmp_path: Path
) -> None:
    body = os.urandom(4000)
    url = origin.add("/pub/x.tgz", body)
    key = plant(data, url, body, source="auto")  # what auto-fill of a shim's miss does
    m = mirror_manifest(tmp_path / "m.yaml", "pub", [f"{origin.base}/pub/"], ["x.tgz"])
    assert sync(data, m) == 0
    assert same_inode(link(data, "pub", "x.tgz"), blob(data, key))
    link(data, "pub", "x.tgz").unlink()
    assert sync(data, m) == 0
    assert same_inode(link(data, "pub", "x.tgz"), blob(data, key))
    assert not origin.requests


def test_pins_added_later_fetch_the_file_again_once(
    origin: Origin, data: Layout, tmp_path: Path
) -> None:
    body = os.urandom(4000)
    origin.add("/x.tgz", body)
    m = mirror_manifest(tmp_path / "m.yaml", "g", [origin.base], ["x.tgz"])
    assert sync(data, m) == 0
    mirror_manifest(
        tmp_path / "m.yaml",
        "g",
        [origin.base],
        [f"path: x.tgz\nsha512: {hashlib.sha512(body).hexdigest()}"],
    )
    assert sync(data, m) == 0
    assert len(origin.seen("/x.tgz", "GET")) == 2
    assert rows(data)["g/x.tgz"][2] == f"sha512={hashlib.sha512(body).hexdigest()}"
    assert sync(data, m) == 0
    assert len(origin.seen("/x.tgz", "GET")) == 2
    assert assert_mirror_tree_sound(data) == 1


def test_prune_takes_the_link_with_the_artifact(
    origin: Origin, data: Layout, tmp_path: Path
) -> None:
    for n in ("a.tgz", "b.tgz"):
        origin.add(f"/{n}", n.encode() * 100)
    m = mirror_manifest(tmp_path / "m.yaml", "g", [origin.base], ["a.tgz", "b.tgz"])
    assert sync(data, m) == 0
    mirror_manifest(tmp_path / "m.yaml", "g", [origin.base], ["a.tgz"])
    assert sync(data, m) == 0  # without --prune both stay
    assert link(data, "g", "b.tgz").exists()
    assert sync(data, m, "--prune") == 0
    assert not link(data, "g", "b.tgz").exists()
    assert set(rows(data)) == {"g/a.tgz"}
    assert assert_mirror_tree_sound(data) == 1


def test_a_dropped_download_resumes_from_the_same_source_next_round(
    three: tuple[Origin, Origin, Origin], data: Layout, tmp_path: Path
) -> None:
    a, b, _ = three
    body = os.urandom(3 << 20)
    b.add("/big.iso", body, drop_after=1 << 20, drop_times=1)
    m = mirror_manifest(tmp_path / "m.yaml", "g", [a.base, b.base], ["big.iso"])
    assert sync(data, m, "--retries", "1") == 0
    gets = b.seen("/big.iso", "GET")
    assert len(gets) == 2 and gets[1].headers.get("Range", "").startswith("bytes=")
    assert link(data, "g", "big.iso").read_bytes() == body


def test_kill_9_during_mirror_syncs_never_leaves_a_bad_file(
    three: tuple[Origin, Origin, Origin], data: Layout, tmp_path: Path
) -> None:
    """The sync campaign's invariant with links: after every kill, every blob and every
    file under www/m/ hashes to its record; at the end one sync completes everything."""
    rounds = 60 if LONG else 8
    rng = random.Random(1414)
    a, b, c = three
    bodies = {f"f{i}.tgz": os.urandom((i + 1) * 500_000) for i in range(6)}
    for i, (n, body) in enumerate(bodies.items()):
        (b if i % 2 else c).add(f"/{n}", body, slow=0.02)
        a.add(f"/{n}", os.urandom(len(body)), status=500 if i % 3 == 0 else 200)  # wrong
    pins = [f"path: {n}\nsha256: {sha(body)}" for n, body in bodies.items()]
    m = mirror_manifest(tmp_path / "m.yaml", "g", [a.base, b.base, c.base], pins)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = withcache_cmd("sync", "--data", str(data.root), "-m", str(m), "-q", "-j", "3")

    def downloading() -> bool:
        for p in data.partial.glob("*.part"):
            with contextlib.suppress(FileNotFoundError):  # placed meanwhile
                if p.stat().st_size:
                    return True
        return False

    mid_download = 0
    for _ in range(rounds):
        proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20  # however long the CLI takes to start here
        while proc.poll() is None and not downloading() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.8))
        mid_download += proc.poll() is None and downloading()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert_mirror_tree_sound(data)
    assert mid_download >= 2, "the kills did not land during downloads"
    r = run_withcache("sync", "--data", str(data.root), "-m", str(m))
    assert r.returncode == 0, r.stderr
    assert assert_mirror_tree_sound(data) == len(bodies)


def test_sync_locked_holds_mirror_files_to_the_lock(
    origin: Origin, data: Layout, tmp_path: Path
) -> None:
    body = os.urandom(4000)
    origin.add("/x.tgz", body)
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    m = mirror_manifest(manifests / "m.yaml", "g", [origin.base], ["x.tgz"])
    assert sync(data, m) == 0
    assert main(["lock", "--data", str(data.root), "-m", str(manifests), "-q"]) == 0
    key = keys.normalize(f"{origin.base}/x.tgz")
    assert (manifests / "withcache.lock").read_text().endswith(f"{sha(body)}  {key}\n")
    assert sync(data, m, "--locked") == 0  # held and locked: nothing to do
    origin.add("/x.tgz", os.urandom(4000))  # changed in place upstream
    link(data, "g", "x.tgz").unlink()
    blob(data, key).unlink()
    assert sync(data, m, "--locked") == 1  # the new bytes are not the locked ones
    assert not link(data, "g", "x.tgz").exists() and not blob(data, key).exists()


def test_evicting_an_auto_filled_mirror_file_takes_its_link_too(
    data: Layout, tmp_path: Path
) -> None:
    import io

    from withcache import budget, placement, store
    from withcache.mirrors.paths import MirrorRef
    from withcache.mirrors.tree import Placement

    body = os.urandom(5000)
    key = keys.normalize("https://s.example/pool/x.tgz")
    part = data.partial / "x.part"
    verified = placement.copy_in(data, io.BytesIO(body), part, None)
    ref = MirrorRef("lab", "pool/x.tgz")
    conn = store.connect(data.db)
    try:
        item = placement.Item(verified, key=key, url=key, source="auto", mirror=Placement(ref, key))
        placement.install(data, conn, item)
        assert same_inode(link(data, "lab", "pool/x.tgz"), blob(data, key))
        (victim,) = budget.candidates(conn)
        budget.evict(data, conn, [victim], "test")
    finally:
        conn.close()
    # a link left behind would keep serving the bytes and keep their disk space
    assert not link(data, "lab", "pool/x.tgz").exists() and not blob(data, key).exists()
    assert assert_mirror_tree_sound(data) == 0
