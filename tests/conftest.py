"""Real parts for tests: a loopback origin, nginx started by `withcache serve`,
and a guard that no test leaks threads."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.origin import Origin
from tests.tls import CA, make_ca
from withcache import keys, placement, store
from withcache.children import stop
from withcache.layout import Layout

ROOT = Path(__file__).resolve().parent.parent
VECTORS = Path(__file__).resolve().parent / "key-vectors.tsv"
LONG = os.environ.get("WITHCACHE_LONG") == "1"


def withcache_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "withcache", *args]


def run_withcache(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess (what an operator runs)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.update(kw.pop("env", {}))  # type: ignore[arg-type]
    return subprocess.run(
        withcache_cmd(*args),
        capture_output=True,
        text=True,
        cwd=kw.pop("cwd", ROOT),
        env=env,
        timeout=kw.pop("timeout", 300),
        **kw,  # type: ignore[arg-type]
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def key_vectors() -> list[tuple[bool, str, str]]:
    rows = []
    for line in VECTORS.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        kq, url, path = line.split("\t")
        rows.append((kq == "1", url, path))
    return rows


@pytest.fixture(scope="session", autouse=True)
def _world_traversable_tmp(tmp_path_factory: pytest.TempPathFactory) -> None:
    """nginx's workers run as www-data when tests run as root: let them reach tmp dirs."""
    base = tmp_path_factory.getbasetemp()
    for d in (base, *base.parents):
        if d == Path("/"):
            break
        if d.stat().st_uid == os.geteuid():
            d.chmod(d.stat().st_mode | 0o755)


@pytest.fixture(autouse=True)
def _no_thread_leaks() -> Iterator[None]:
    before = {t.ident for t in threading.enumerate()}
    yield
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        leaked = [
            t
            for t in threading.enumerate()
            if t.ident not in before and t.is_alive() and not t.daemon
        ]
        if not leaked:
            return
        time.sleep(0.05)
    pytest.fail(f"threads leaked: {leaked}")


@pytest.fixture
def origin() -> Iterator[Origin]:
    o = Origin()
    yield o
    o.close()


@pytest.fixture
def data(tmp_path: Path) -> Layout:
    tmp_path.chmod(0o755)  # pytest makes it 0700; nginx's www-data worker must get through
    return Layout(tmp_path / "data").ensure()


def plant(
    layout: Layout, url: str, body: bytes, keep_query: bool = False, source: str = "manifest"
) -> str:
    """Put an artifact in the tree through the one placement routine, as sync does."""
    key = keys.normalize(url, keep_query)
    layout.ensure()
    part = layout.partial / (hashlib.sha256(key.encode()).hexdigest() + ".plant")
    verified = placement.copy_in(layout, io.BytesIO(body), part, None)
    conn = store.connect(layout.db)
    try:
        placement.install(layout, conn, placement.Item(verified, key=key, url=url, source=source))
    finally:
        conn.close()
    return key


@pytest.fixture(scope="session")
def tls_ca(tmp_path_factory: pytest.TempPathFactory) -> CA:
    """A throwaway CA and a certificate it signs for 127.0.0.1 (tests/tls.py)."""
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    return make_ca(tmp_path_factory.mktemp("ca"))


@dataclass
class Cache:
    """nginx serving a data dir, started with the real `withcache serve`."""

    url: str
    data: Path
    proc: subprocess.Popen[bytes]
    tls_url: str | None = None  # https://127.0.0.1:PORT when started with a certificate

    @property
    def layout(self) -> Layout:
        return Layout(self.data)

    @property
    def access_log(self) -> Path:
        return self.layout.access_log

    def plant(self, origin_url: str, body: bytes, keep_query: bool = False) -> str:
        """Place an artifact; return its cache URL."""
        key = plant(self.layout, origin_url, body, keep_query)
        return self.url + keys.cache_path(key)

    def log_lines(
        self, at_least: int = 0, timeout: float = 5.0, where: Callable[[str], bool] | None = None
    ) -> list[str]:
        """The access log's lines (those `where` accepts); with `at_least`, wait up to
        `timeout` for that many (nginx writes a request's line just after its response
        has gone)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.access_log.read_bytes().decode("utf-8", "replace").splitlines()
            if where is not None:
                lines = [line for line in lines if where(line)]
            if len(lines) >= at_least or time.monotonic() >= deadline:
                return lines
            time.sleep(0.02)


def start_nginx(
    data: Path,
    port: int | None = None,
    *extra: str,
    tls: tuple[Path, Path] | None = None,
    timeout: float = 15,
) -> Cache:
    """`withcache serve` on loopback, up when /healthz answers within `timeout`;
    `extra`: more serve options (e.g. -m MANIFEST, --edge URL); with `tls` (certificate,
    key) https too, at `Cache.tls_url`."""
    if not shutil.which("nginx") and not Path("/usr/sbin/nginx").exists():
        pytest.skip("nginx is not installed (apt-get install nginx)")
    port = port or free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    args = ["serve", "--data", str(data), "--listen", f"127.0.0.1:{port}"]
    tls_url = None
    if tls is not None:
        tls_port = free_port()
        args += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
        args += ["--tls-listen", f"127.0.0.1:{tls_port}"]
        tls_url = f"https://127.0.0.1:{tls_port}"
    proc = subprocess.Popen(
        withcache_cmd(*args, *extra),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"withcache serve exited {proc.returncode}: {out}")
        try:
            if requests.get(url + "/healthz", timeout=1).status_code == 200:
                return Cache(url, data, proc, tls_url)
        except requests.RequestException:
            time.sleep(0.05)
    stop_nginx(proc)
    raise RuntimeError(f"withcache serve did not answer /healthz within {timeout:g} s")


def stop_nginx(proc: subprocess.Popen[bytes]) -> None:
    stop(proc)
    for stream in (proc.stdout, proc.stderr):
        if stream:
            stream.close()


@pytest.fixture
def cache(data: Layout) -> Iterator[Cache]:
    c = start_nginx(data.root)
    yield c
    stop_nginx(c.proc)


@pytest.fixture
def tls_cache(data: Layout, tls_ca: CA) -> Iterator[Cache]:
    """The same nginx, serving the tree over https as well (`tls_url`)."""
    c = start_nginx(data.root, tls=(tls_ca.cert, tls_ca.key))
    yield c
    stop_nginx(c.proc)


@pytest.fixture
def watcher(cache: Cache) -> Iterator[object]:
    """A real watcher process following the log nginx writes, up before the first request."""
    from tests.watcher import Watcher, checkpoint

    w = Watcher(cache.data, cache.access_log, "--index-every", "0")
    deadline = time.monotonic() + 20
    while checkpoint(cache.data, cache.access_log) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    yield w
    w.stop()


def check_server_block(tmp_path: Path, snippet: str) -> None:
    """`nginx -t` of the server block `withcache nginx-config` prints, included from a
    minimal nginx.conf as a system nginx would include it."""
    from withcache import nginx

    (tmp_path / "withcache.conf").write_text(snippet)
    main_conf = tmp_path / "nginx.conf"
    main_conf.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
        f"http {{\n include {tmp_path}/withcache.conf;\n}}\n"
    )
    nginx.check(main_conf)


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at `path` (created) with mount `options` ("size=64m,..."), for a
    data dir whose disk fills up for real; skips where mounting is not allowed."""
    path.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
