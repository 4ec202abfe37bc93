"""The lock file: `withcache lock` on a synced tree, then an origin that changes a file in
place, and `sync --refresh --locked` refusing it by the lock's line while the served
bytes stay; `check --locked` in CI; the pure rules of enforce()."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import run_withcache
from tests.origin import Origin
from tests.pyindex_upstream import Upstream
from withcache import keys, lockfile, store, tree
from withcache.errors import ManifestError
from withcache.layout import Layout
from withcache.plan import Fetch, Plan, Wanted

TOOL = b"tool 1.0, the bytes first fetched"


@dataclass
class Synced:
    origin: Origin
    up: Upstream
    manifests: Path
    data: Path
    tool_url: str

    def run(self, *args: str) -> tuple[int, str]:
        r = run_withcache(*args, "--data", str(self.data))
        return r.returncode, r.stderr + r.stdout

    @property
    def lock(self) -> Path:
        return self.manifests / "withcache.lock"

    def blob(self, url: str) -> bytes:
        return tree.blob_path(Layout(self.data), keys.normalize(url)).read_bytes()


@pytest.fixture
def synced(tmp_path: Path) -> Iterator[Synced]:
    origin = Origin()
    up = Upstream()
    up.add("lk-wheel", "1.0")
    up.publish(origin)
    tool = origin.add("/vendor/tool-1.0.tar.gz", TOOL)
    pinned = origin.add("/vendor/pinned.bin", b"pinned")
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "a.yaml").write_text(
        f"artifacts:\n  - {tool}\n  - url: {pinned}\n"
        f"    sha256: {hashlib.sha256(b'pinned').hexdigest()}\n"
        f"python:\n  index: {origin.base}/json/simple/\n  requirements: [lk-wheel]\n"
        '  python: ["3.11"]\n  platforms: [any]\n'
    )
    s = Synced(origin, up, manifests, tmp_path / "data", tool)
    code, out = s.run("sync", "-m", str(manifests))
    assert code == 0, out
    yield s
    origin.close()


def test_lock_then_an_origin_changing_a_file_in_place_is_refused(synced: Synced) -> None:
    code, out = synced.run("lock", "-m", str(synced.manifests))
    assert code == 0, out
    text = synced.lock.read_text()
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert f"{hashlib.sha256(TOOL).hexdigest()}  {synced.tool_url}" in lines
    assert any(line.endswith("/files/lk_wheel-1.0-py3-none-any.whl") for line in lines)
    assert not any("pinned.bin" in line for line in lines)  # the manifest pins it already
    code, out = synced.run("check", "--locked", str(synced.manifests))
    assert code == 0, out

    synced.origin.add("/vendor/tool-1.0.tar.gz", b"tool 1.0, quietly rebuilt")  # same URL
    code, out = synced.run("sync", "--refresh", "--locked", "-m", str(synced.manifests))
    assert code == 1, out
    line = next(n for n, t in enumerate(text.splitlines(), 1) if synced.tool_url in t)
    assert f"fetch {synced.tool_url} ({synced.lock}:{line}): sha256 mismatch" in out
    assert synced.blob(synced.tool_url) == TOOL  # the served bytes are unchanged

    code, out = synced.run("sync", "--refresh", "-m", str(synced.manifests))  # not locked
    assert code == 0, out
    assert synced.blob(synced.tool_url) == b"tool 1.0, quietly rebuilt"
    code, out = synced.run("check", "--locked", str(synced.manifests))
    assert code == 2 and f"{synced.tool_url}: the cache holds sha256" in out


def test_a_python_file_relisted_with_other_bytes_is_refused_without_a_request(
    synced: Synced,
) -> None:
    assert synced.run("lock", "-m", str(synced.manifests))[0] == 0
    wheel = synced.up.dists[0]
    before = synced.blob(f"{synced.origin.base}/files/{wheel.filename}")
    wheel.body = wheel.body + b"\0"  # rebuilt under the same file name
    synced.up.publish(synced.origin)
    asked = len(synced.origin.seen(f"/files/{wheel.filename}"))
    code, out = synced.run("sync", "--locked", "-m", str(synced.manifests))
    assert code == 1, out
    assert f"({synced.lock}:" in out and "the upstream lists sha256" in out
    assert len(synced.origin.seen(f"/files/{wheel.filename}")) == asked  # not fetched
    assert synced.blob(f"{synced.origin.base}/files/{wheel.filename}") == before


def test_check_locked_names_unlocked_entries_and_bad_lines(synced: Synced) -> None:
    code, out = synced.run("check", "--locked", str(synced.manifests))
    assert code == 2 and "no lock file; create it with `withcache lock`" in out
    assert synced.run("lock", "-m", str(synced.manifests))[0] == 0
    new = synced.origin.add("/vendor/new.iso", b"new")
    with (synced.manifests / "b.yaml").open("w") as f:
        f.write(f"artifacts:\n  - {new}\n")
    code, out = synced.run("check", "--locked", str(synced.manifests))
    assert code == 2 and f"b.yaml:2: {new} is not in {synced.lock}" in out
    code, out = synced.run("sync", "--locked", "-m", str(synced.manifests))
    assert code == 1 and f"fetch {new} " in out and "not in withcache.lock" in out
    synced.lock.write_text(synced.lock.read_text() + "nonsense\n")
    code, out = synced.run("check", "--locked", str(synced.manifests))
    n = len(synced.lock.read_text().splitlines())
    assert code == 2 and f"withcache.lock:{n}: expected '<sha256>  <URL>'" in out


# ---------------------------------------------------------------- enforce() (pure)

A, B, C = "a" * 64, "b" * 64, "c" * 64


def w(key: str, sha: str | None = None, source: str = "manifest") -> Wanted:
    return Wanted(key, key, "n", "m.yaml:3", sha, source=source)


def rec(key: str, sha: str) -> store.Artifact:
    return store.Artifact(key, key, "n", 1, sha, 0.0)


def test_enforce() -> None:
    lock = lockfile.parse(f"# c\n{A}  https://x/unpinned\n{B}  https://x/wheel.whl\n", Path("L"))
    plan = Plan(
        fetch=[
            Fetch(w("https://x/unpinned"), "refresh"),
            Fetch(w("https://x/wheel.whl", C, "python"), "repin"),
            Fetch(w("https://x/pinned", C), "new"),
            Fetch(w("https://x/new"), "new"),
        ],
        keep=[w("https://x/kept", None), w("https://x/wheel2.whl", A, "python")],
    )
    out, refused = lockfile.enforce(plan, lock, {"https://x/kept": rec("https://x/kept", A)})
    assert [(f.wanted.key, f.wanted.sha256, f.wanted.where) for f in out.fetch] == [
        ("https://x/unpinned", A, "L:2"),  # held to the lock's bytes, named by its line
        ("https://x/pinned", C, "m.yaml:3"),  # a manifest pin needs no lock line
    ]
    why = {r.key: (r.where, text) for r, text in refused}
    assert why["https://x/wheel.whl"] == (
        "L:3",
        f"the upstream lists sha256 {C}, the lock says {B}; not fetched",
    )
    assert why["https://x/new"][1].startswith("not in L;")
    assert why["https://x/kept"][1].startswith("not in L;")
    assert why["https://x/wheel2.whl"][1].startswith("not in L;")


def test_lock_lines_are_checked() -> None:
    with pytest.raises(ManifestError) as exc:
        lockfile.parse(f"{A} https://x/one-space\n{A}  https://x/a\n{B}  https://x/a\n", Path("L"))
    assert [str(p) for p in exc.value.problems] == [
        "L:1: expected '<sha256>  <URL>' (two spaces)",
        "L:3: https://x/a is locked twice (also line 2)",
    ]
