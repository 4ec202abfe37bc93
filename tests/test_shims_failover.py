"""WITHCACHE_SERVER as a list: servers probed in order, the first 200 wins.

Here a down host comes first, then an "edge" and the "center": two plain
`withcache serve` nginx on their own ports, the edge holding the artifact (an edge
cache proper fills itself from the center; to the shim it is just a server).
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Cache, free_port, start_nginx, stop_nginx
from tests.origin import Origin
from tests.test_shims_e2e import CACHED, ORIGINAL, env_for, log, run, serve, shim, tree
from withcache import keys
from withcache.layout import Layout

TIMEOUT = "0.5"  # WITHCACHE_TIMEOUT: what a host that never answers may cost


def nginx_in(tmp: Path) -> Cache:
    tmp.chmod(0o755)  # nginx's workers must get through
    return start_nginx(Layout(tmp / "data").ensure().root)


# Two plain `withcache serve` nginx for the module: each test's origin has a port of
# its own, so its keys and log lines (seen()) are its own too.
@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cache]:
    c = nginx_in(tmp_path_factory.mktemp("edge"))
    yield c
    stop_nginx(c.proc)


@pytest.fixture(scope="module")
def center(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cache]:
    c = nginx_in(tmp_path_factory.mktemp("center"))
    yield c
    stop_nginx(c.proc)


def seen(c: Cache, url: str) -> list[tuple[object, object]]:
    """(method, status) of the requests `c` logged for this URL's cache path."""
    path = keys.cache_path(keys.normalize(url)).rsplit("/", 1)[0] + "/"
    return [(e["method"], e["status"]) for e in log(c) if str(e["uri"]).startswith(path)]


@pytest.fixture(scope="module")
def silent() -> Iterator[str]:
    """A host that accepts connections (the kernel does) and never answers a byte."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    yield f"127.0.0.1:{s.getsockname()[1]}"
    s.close()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


def fetch(tool: str) -> list[str]:
    return ["-fsS", "-o", "out"] if tool == "curl" else ["-q", "-O", "out"]


@pytest.mark.parametrize(
    "shell, tool, down",
    [
        ("dash", "curl", "refused"),
        ("busybox", "curl", "silent"),
        ("busybox", "wget", "refused"),
        ("dash", "wget", "silent"),
    ],
)
def test_down_host_then_edge_then_center_hits_the_edge(
    shell: str,
    tool: str,
    down: str,
    edge: Cache,
    center: Cache,
    silent: str,
    origin: Origin,
    tmp_path: Path,
    home: Path,
) -> None:
    url = serve(origin, "/cuda/cuda_12.6.3_linux.run", ORIGINAL)
    edge.plant(url, CACHED + b" (edge)")
    center.plant(url, CACHED + b" (center)")
    dead = f"127.0.0.1:{free_port()}" if down == "refused" else silent
    servers = f"{dead} {edge.url},{center.url}"
    t0 = time.monotonic()
    r = run([*shim(tool, shell), *fetch(tool), url], tmp_path / "w", env_for(
        home, servers, WITHCACHE_TIMEOUT=TIMEOUT))  # fmt: skip
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "w" / "out").read_bytes() == CACHED + b" (edge)"
    assert seen(edge, url) == [("HEAD", 200), ("GET", 200)]
    assert seen(center, url) == [] and origin.requests == []
    # A loose bound (a loaded machine): the exact cost is in bench/bench_shim.py.
    assert elapsed < float(TIMEOUT) + 1.5, elapsed


@pytest.mark.parametrize("tool", ["curl", "wget"])
def test_a_miss_on_the_edge_is_asked_of_the_center(
    tool: str, edge: Cache, center: Cache, origin: Origin, tmp_path: Path, home: Path
) -> None:
    url = serve(origin, "/rocm/amdgpu-install.deb", ORIGINAL)
    center.plant(url, CACHED + b" (center)")
    r = run(
        [*shim(tool), *fetch(tool), url], tmp_path / "w", env_for(home, f"{edge.url} {center.url}")
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "w" / "out").read_bytes() == CACHED + b" (center)"
    assert seen(edge, url) == [("HEAD", 404)]  # the edge's miss is recorded there
    assert seen(center, url) == [("HEAD", 200), ("GET", 200)]


@pytest.mark.parametrize("shell", ["dash", "busybox"])
@pytest.mark.parametrize(
    "cmd",
    [
        ["curl", "-fsS", "-o", "out", "{url}"],
        ["curl", "-fsS", "-O", "{gone}"],  # the origin's 404: exit 22 either way
        ["curl", "-sS", "{gone}"],  # its error page on stdout, exit 0
        ["wget", "-q", "{url}"],
        ["wget", "-q", "{gone}"],  # exit 8
    ],
)
def test_all_down_is_plain_pass_through(
    shell: str, cmd: list[str], silent: str, origin: Origin, tmp_path: Path, home: Path
) -> None:
    url = serve(origin, "/tools/helm-v3.16.3-linux-amd64.tar.gz", ORIGINAL)
    gone = serve(origin, "/tools/gone.tar.gz", b"not here\n", status=404)
    tool, *args = [a.format(url=url, gone=gone) for a in cmd]
    real = shutil.which(tool)
    assert real
    plain = run([real, *args], tmp_path / "plain", env_for(home, None))
    servers = f"127.0.0.1:{free_port()} {silent},http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    shimmed = run([*shim(tool, shell), *args], tmp_path / "shim", env_for(
        home, servers, WITHCACHE_TIMEOUT=TIMEOUT))  # fmt: skip
    elapsed = time.monotonic() - t0
    assert shimmed.returncode == plain.returncode
    assert shimmed.stdout == plain.stdout
    assert tree(tmp_path / "shim") == tree(tmp_path / "plain")
    assert elapsed < float(TIMEOUT) + 1.5, elapsed  # one silent host, one timeout


def test_busybox_wget_with_a_list_passes_through(
    edge: Cache, origin: Origin, tmp_path: Path, home: Path
) -> None:
    """busybox wget has no --no-config: every probe fails, every command goes to the origin."""
    busybox = shutil.which("busybox")
    if not busybox:
        pytest.skip("busybox is not installed")
    url = serve(origin, "/a/tool.tar.gz", ORIGINAL)
    edge.plant(url, CACHED)
    link = tmp_path / "bin" / "wget"
    link.parent.mkdir()
    link.symlink_to(busybox)
    env = env_for(home, f"127.0.0.1:{free_port()} {edge.url}", REAL_WGET=str(link))
    env["PATH"] = f"{link.parent}:{os.environ['PATH']}"
    r = run([*shim("wget"), "-q", "-O", "out", url], tmp_path / "w", env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "w" / "out").read_bytes() == ORIGINAL
