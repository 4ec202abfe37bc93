"""A broken cache-host must never yield wrong bytes (a failing disk, a bad proxy).

The cache here answers the shim's HEAD probe with 200 and then fails the GET: a
500 with an error page, or a body cut short. Plain curl/wget would have fetched
the origin's bytes; through the shim:
- when the output can be restarted (-o, -O, wget's file), the command is run again
  against the origin and ends exactly as plain would;
- when it went to stdout, the command fails loudly, and never with the error page.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.origin import Origin
from tests.test_shims_e2e import ORIGINAL, env_for, run, shim, tree

ERROR_PAGE = b"<html><body><h1>500 Internal Server Error</h1></body></html>\r\n\r\n"
SIZE = 256 * 1024  # what the broken cache claims to hold, and sends half of


class BrokenCache:
    """HEAD: 200 for anything under /b/. GET: `mode` = 500 (an error page) or
    "short" (Content-Length SIZE, half the body, then the connection closes)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.gets = 0
        cache = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(SIZE))
                self.end_headers()

            def do_GET(self) -> None:
                cache.gets += 1
                if cache.mode == "500":
                    self.send_response(500)
                    self.send_header("Content-Length", str(len(ERROR_PAGE)))
                    self.end_headers()
                    self.wfile.write(ERROR_PAGE)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(SIZE))
                self.end_headers()
                self.wfile.write(b"c" * (SIZE // 2))
                self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture(params=["500", "short"])
def broken(request: pytest.FixtureRequest) -> Iterator[BrokenCache]:
    b = BrokenCache(request.param)
    yield b
    b.close()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


def artifact(origin: Origin) -> str:
    return origin.add("/vendor/driver-550.run", ORIGINAL * 1000)


def shells(rows: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    """Each row under dash or busybox sh in turn (test_shims.py runs every path under
    both; here the real tools and the broken host are what is tested)."""
    return [(*row, ("dash", "busybox")[i % 2]) for i, row in enumerate(rows)]


@pytest.mark.parametrize(
    "cmd, saved, shell",
    shells(
        [
            (["curl", "-sS", "-o", "out"], "out"),  # no -f: plain curl would save a 500 page
            (["curl", "-fsSLO"], "driver-550.run"),
            (["curl", "-sS", "--retry", "3", "-o", "out"], "out"),  # no 3 retries of the cache
            (["curl", "-sSC", "-", "-o", "out"], "out"),  # not resumed from the cache's bytes
            (["wget", "-q"], "driver-550.run"),
            (["wget", "-q", "-O", "out"], "out"),
            (["wget", "-q", "-t", "20", "-P", "d"], "d/driver-550.run"),
            (["wget", "-qc"], "driver-550.run"),
        ]
    ),
)
def test_restartable_output_is_fetched_again_from_the_origin(
    shell: str,
    cmd: list[str],
    saved: str,
    broken: BrokenCache,
    origin: Origin,
    tmp_path: Path,
    home: Path,
) -> None:
    url = artifact(origin)
    tool, *args = cmd
    work = tmp_path / "w"
    t0 = time.monotonic()
    r = run([*shim(tool, shell), *args, url], work, env_for(home, broken.url))
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert tree(work) == {saved: ORIGINAL * 1000}  # no partial, no "name.1" beside it
    assert broken.gets == 1  # tried once, not retried
    assert [s.method for s in origin.requests] == ["GET"]
    assert "from the cache at " + broken.url in r.stderr and "against the origin" in r.stderr
    assert elapsed < 5, elapsed  # wget would retry a short body for over 30 s


@pytest.mark.parametrize("tool", ["curl", "wget"])
def test_an_existing_file_ends_as_plain_would_leave_it(
    tool: str, broken: BrokenCache, origin: Origin, tmp_path: Path, home: Path
) -> None:
    """wget saves "name.1" beside an existing "name": the attempt's partial .1 is
    removed, so the second run saves "name.1" again, as plain wget does."""
    url = artifact(origin)
    dirs = {}
    for who in ("plain", "shim"):
        dirs[who] = tmp_path / who
        dirs[who].mkdir()
        (dirs[who] / "driver-550.run").write_bytes(b"an older download")
    args = ["-sSO", url] if tool == "curl" else ["-q", url]
    real = shutil.which(tool)
    assert real
    plain = run([real, *args], dirs["plain"], env_for(home, None))
    shimmed = run([*shim(tool), *args], dirs["shim"], env_for(home, broken.url))
    assert plain.returncode == shimmed.returncode == 0, shimmed.stderr
    assert tree(dirs["shim"]) == tree(dirs["plain"])


@pytest.mark.parametrize(
    "cmd, status, shell",
    shells(
        [
            (["curl", "-sS"], {"500": 22, "short": 18}),
            (["curl", "-s"], {"500": 22, "short": 18}),  # silent: the shim still says why
            (["wget", "-qO-"], {"500": 8, "short": 4}),
        ]
    ),
)
def test_stdout_fails_loudly_and_never_passes_the_error_page_on(
    shell: str,
    cmd: list[str],
    status: dict[str, int],
    broken: BrokenCache,
    origin: Origin,
    tmp_path: Path,
    home: Path,
) -> None:
    url = artifact(origin)
    tool, *args = cmd
    r = run([*shim(tool, shell), *args, url], tmp_path, env_for(home, broken.url))
    assert r.returncode == status[broken.mode]
    assert "500 Internal" not in r.stdout
    assert len(r.stdout) < SIZE  # a short body stays short: never passed off as whole
    assert f"failed (exit {r.returncode}) on a transfer from the cache at {broken.url}" in r.stderr
    assert "not run again" in r.stderr
    assert origin.requests == []


@pytest.mark.parametrize(
    "args",
    [
        # Sending data: running the command twice would send it twice.
        ["-sS", "-o", "a", "{url}", "--next", "-d", "x=1", "-o", "b", "{post}"],
        # --write-out prints to stdout, which cannot be taken back.
        ["-sS", "-o", "a", "-w", "%{http_code}\n", "{url}"],
    ],
)
def test_a_command_that_cannot_run_twice_fails_loudly(
    args: list[str], broken: BrokenCache, origin: Origin, tmp_path: Path, home: Path
) -> None:
    url = artifact(origin)
    post = origin.add("/api/report", b"ok")
    argv = [a.replace("{url}", url).replace("{post}", post) for a in args]
    r = run([*shim("curl"), *argv], tmp_path, env_for(home, broken.url))
    assert r.returncode in (22, 18)
    assert "not run again" in r.stderr
    assert [s.method for s in origin.requests] in ([], ["POST"])  # never twice
    assert not (tmp_path / "a").exists() or (tmp_path / "a").read_bytes() != ERROR_PAGE


def test_a_failure_of_the_command_itself_is_returned_as_it_is(
    broken: BrokenCache, origin: Origin, tmp_path: Path, home: Path
) -> None:
    """Not the cache's doing (here: the output directory does not exist): no
    second run, no message, curl's own exit status."""
    url = artifact(origin)
    r = run(
        [*shim("curl"), "-sS", "-o", "no/such/dir/out", url], tmp_path, env_for(home, broken.url)
    )
    assert r.returncode == 23  # as plain curl
    if broken.mode == "500":  # -f: the cache's error comes first, then the origin run's 23
        assert "against the origin" in r.stderr
        assert [s.method for s in origin.requests] == ["GET"]
    else:  # the first write fails: the command's own failure
        assert "from the cache" not in r.stderr
        assert origin.requests == []
