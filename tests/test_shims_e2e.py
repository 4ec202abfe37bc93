"""The shims with real curl and wget, real nginx (`withcache serve`) and a loopback origin.

Each test says where the bytes came from: the cache and the origin hold different
bodies for the same URL where that matters, the origin records every request, and
nginx's access log every probe.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from tests.conftest import Cache, free_port, run_withcache
from tests.origin import Origin
from tests.test_misses_e2e import misses_json, wait_for
from tests.watcher import Watcher
from withcache import keys

ROOT = Path(__file__).resolve().parent.parent
CURL = shutil.which("curl")
WGET = shutil.which("wget")
SHELLS = {"dash": [shutil.which("dash") or "dash"], "busybox": ["busybox", "sh"]}

pytestmark = pytest.mark.skipif(not (CURL and WGET), reason="needs curl and wget")

CACHED = b"bytes from the cache"
ORIGINAL = b"bytes from the origin"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty HOME: no user's curlrc or wgetrc in the way."""
    h = tmp_path / "home"
    h.mkdir()
    return h


def env_for(home: Path, server: str | None, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.lower().endswith("_proxy") and "WITHCACHE" not in k and not k.startswith("REAL_")
    }
    env.update(HOME=str(home), LC_ALL="C.UTF-8", **extra)
    if server is not None:
        env["WITHCACHE_SERVER"] = server
    return env


def shim(tool: str, shell: str | None = None) -> list[str]:
    path = str(ROOT / "shims" / f"{tool}withcache")
    return [*SHELLS[shell], path] if shell else [path]  # None: by its #!/bin/sh


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def log(cache: Cache, at_least: int = 0) -> list[dict[str, object]]:
    """nginx's access log, artifact requests only (not the fixture's /healthz); with
    `at_least`, wait for that many (nginx logs a request just after answering it)."""
    if not cache.access_log.exists():
        return []
    lines = cache.log_lines(at_least, where=lambda line: '"uri":"/b/' in line)
    return [json.loads(line) for line in lines]


def serve(origin: Origin, path: str, body: bytes, **opts: object) -> str:
    """Route `path` (as typed) under every spelling a client may send it in: curl
    percent-encodes non-ASCII in lower-case hex, wget in upper-case."""
    upper = quote(path, safe="/%+~!$&'()*,;=:@")
    lower = re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), upper)
    for p in {path, upper, lower}:
        origin.add(p, body, **opts)
    return origin.base + path


def fetch_args(tool: str, out: str, url: str) -> list[str]:
    return ["-fsS", "-o", out, url] if tool == "curl" else ["-q", "-O", out, url]


# --- Hit, miss, cache down, no server ---------------------------------------------


@pytest.mark.parametrize("shell", ["dash", "busybox"])
@pytest.mark.parametrize("tool", ["curl", "wget"])
def test_hit_is_served_by_the_cache_and_the_origin_sees_nothing(
    tool: str, shell: str, cache: Cache, origin: Origin, tmp_path: Path, home: Path
) -> None:
    url = serve(origin, "/vendor/tool-1.2.tar.gz", ORIGINAL)
    cache_url = cache.plant(url, CACHED)
    r = run([*shim(tool, shell), *fetch_args(tool, "out", url)], tmp_path, env_for(home, cache.url))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out").read_bytes() == CACHED
    assert origin.requests == []
    path = cache_url[len(cache.url) :]
    assert [(e["method"], e["uri"], e["status"]) for e in log(cache, 2)] == [
        ("HEAD", path, 200),
        ("GET", path, 200),
    ]


@pytest.mark.parametrize("tool", ["curl", "wget"])
def test_miss_is_fetched_from_the_origin_and_listed_in_misses(
    tool: str, cache: Cache, watcher: Watcher, origin: Origin, tmp_path: Path, home: Path
) -> None:
    url = serve(origin, f"/vendor/not-cached-{tool}.run", ORIGINAL)
    r = run([*shim(tool), *fetch_args(tool, "out", url)], tmp_path, env_for(home, cache.url))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out").read_bytes() == ORIGINAL
    assert [s.method for s in origin.requests] == ["GET"]
    probe = keys.cache_path(keys.normalize(url))
    assert [(e["method"], e["uri"], e["status"]) for e in log(cache, 1)] == [("HEAD", probe, 404)]
    wait_for(lambda: [m["url"] for m in misses_json(cache.data)] == [url])


def silent_server() -> socket.socket:
    """Accepts TCP connections (the kernel does) and never answers a byte."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    return s


@pytest.mark.parametrize("tool", ["curl", "wget"])
@pytest.mark.parametrize("down", ["refused", "silent"])
def test_cache_down_falls_through_to_the_origin_within_2_5_s(
    tool: str, down: str, origin: Origin, tmp_path: Path, home: Path
) -> None:
    url = serve(origin, "/vendor/tool.tar.gz", ORIGINAL)
    with silent_server() as silent:
        port = silent.getsockname()[1] if down == "silent" else free_port()
        t0 = time.monotonic()
        r = run(
            [*shim(tool), *fetch_args(tool, "out", url)],
            tmp_path,
            env_for(home, f"127.0.0.1:{port}"),
        )
        elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out").read_bytes() == ORIGINAL
    assert elapsed < 2.5, elapsed


def strace_ok() -> bool:
    if not shutil.which("strace"):
        return False
    r = subprocess.run(["strace", "-f", "-o", os.devnull, "true"], capture_output=True)
    return r.returncode == 0


@pytest.mark.skipif(not strace_ok(), reason="strace is missing or may not trace here")
@pytest.mark.parametrize("tool", ["curl", "wget"])
def test_no_server_set_means_no_probe_no_fork_no_parsing(
    tool: str, cache: Cache, origin: Origin, tmp_path: Path, home: Path
) -> None:
    """Traced: the shim's process execs the real tool and nothing else; no process
    is forked before that, and nothing connects anywhere but the origin."""
    url = serve(origin, "/vendor/tool.tar.gz", ORIGINAL)
    cache.plant(url, CACHED)  # a probe would hit: none must happen
    trace = tmp_path / "trace"
    cmd = ["strace", "-f", "-qq", "-e", "trace=execve,clone,clone3,fork,vfork,connect"]
    cmd += ["-o", str(trace), *shim(tool), *fetch_args(tool, "out", url)]
    r = run(cmd, tmp_path / "work", env_for(home, None))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "work" / "out").read_bytes() == ORIGINAL
    assert log(cache) == []

    lines = trace.read_text().splitlines()
    execs = [ln for ln in lines if " execve(" in ln and "= 0" in ln]
    assert len(execs) == 2, execs  # the shim (via /bin/sh), then the real tool
    assert f"{tool}withcache" in execs[0] and f'execve("/usr/bin/{tool}"' in execs[1]
    first_pid = lines[0].split()[0]
    before_real = lines[: lines.index(execs[1])]
    assert all(ln.split()[0] == first_pid for ln in before_real), before_real
    assert not [ln for ln in before_real if re.search(r"\b(clone3?|v?fork)\(", ln)]
    port = str(cache.url.rsplit(":", 1)[1])
    assert not [ln for ln in lines if "connect(" in ln and f"htons({port})" in ln]


# --- Arguments ---------------------------------------------------------------------


@pytest.mark.parametrize("tool", ["curl", "wget"])
def test_urls_in_option_values_are_not_rewritten(
    tool: str, cache: Cache, origin: Origin, tmp_path: Path, home: Path
) -> None:
    cached = serve(origin, "/vendor/cached.bin", ORIGINAL)
    cache.plant(cached, CACHED)
    wanted = serve(origin, "/vendor/wanted.bin", ORIGINAL)
    if tool == "curl":
        args = ["-fsS", "-e", cached, "-H", f"X-Also: {cached}", "-o", "out", wanted]
    else:
        args = ["-q", f"--referer={cached}", "--header", f"X-Also: {cached}", "-O", "out", wanted]
    r = run([*shim(tool), *args], tmp_path, env_for(home, cache.url))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out").read_bytes() == ORIGINAL
    (seen,) = origin.requests
    assert seen.path == "/vendor/wanted.bin"
    assert seen.headers["Referer"] == cached and seen.headers["X-Also"] == cached
    # Only the URL operand was probed.
    probe = keys.cache_path(keys.normalize(wanted))
    assert [(e["method"], e["uri"]) for e in log(cache, 1)] == [("HEAD", probe)]


def test_several_urls_in_one_curl_each_from_where_it_is(
    cache: Cache, origin: Origin, tmp_path: Path, home: Path
) -> None:
    one = serve(origin, "/a/one.bin", ORIGINAL + b"1")
    two = serve(origin, "/b/two.bin", ORIGINAL + b"2")
    three = serve(origin, "/c/three.bin", ORIGINAL + b"3")
    cache.plant(one, CACHED + b"1")
    cache.plant(three, CACHED + b"3")
    args = ["-fsS", "-o", "1", "-o", "2", "-o", "3", one, two, three]
    r = run([*shim("curl"), *args], tmp_path / "w", env_for(home, cache.url))
    assert r.returncode == 0, r.stderr
    got = [(tmp_path / "w" / n).read_bytes() for n in "123"]
    assert got == [CACHED + b"1", ORIGINAL + b"2", CACHED + b"3"]
    assert [s.path for s in origin.requests] == ["/b/two.bin"]
    heads = [e["status"] for e in log(cache, 5) if e["method"] == "HEAD"]
    assert heads == [200, 404, 200]


# --- Same saved names and exit codes as without the shim ----------------------------

NAMES = [
    "/dl/plain-1.0.tar.gz",
    "/dl/a%20b.bin",
    "/dl/a+b~c.bin",
    "/dl/über/grüße.tar",
    "/dl/%E2%9C%93/check.bin",
    "/dl/with-query.tar.gz?sig=abc&x=1",
]
COMMANDS = {
    "curl -O": ["curl", "-fsS", "-O"],
    "curl -OJ": ["curl", "-fsS", "-OJ"],
    "curl --remote-name-all": [
        "curl",
        "-fsS",
        "--remote-name-all",
        "--create-dirs",
        "--output-dir",
        "d",
    ],
    "wget": ["wget", "-q"],
    "wget -P dir": ["wget", "-q", "-P", "dir"],
    "wget -nv -c": ["wget", "-nv", "-c"],
}


def tree(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("command", COMMANDS)
def test_saved_file_names_are_the_same_as_without_the_shim(
    command: str, cache: Cache, origin: Origin, tmp_path: Path, home: Path
) -> None:
    tool, *opts = COMMANDS[command]
    body = b"the artifact's bytes"
    urls = [serve(origin, name, body) for name in NAMES]
    for u in urls:
        cache.plant(u, body)
    real = shutil.which(tool)
    assert real
    for u in urls:
        plain = run([real, *opts, u], tmp_path / "plain", env_for(home, None))
        asked = len(origin.requests)
        shimmed = run([*shim(tool), *opts, u], tmp_path / "shim", env_for(home, cache.url))
        assert shimmed.returncode == plain.returncode == 0, (u, plain.stderr, shimmed.stderr)
        assert len(origin.requests) == asked, f"{u}: not from the cache"
    assert tree(tmp_path / "shim") == tree(tmp_path / "plain")
    assert len(tree(tmp_path / "plain")) == len(NAMES)


@pytest.mark.parametrize(
    "cmd, status",
    [(["curl", "-fsS", "-O"], 22), (["curl", "-sS", "-o", "out"], 0), (["wget", "-q"], 8)],
)
def test_an_origin_404_gives_the_same_exit_status_and_files(
    cmd: list[str], status: int, cache: Cache, origin: Origin, tmp_path: Path, home: Path
) -> None:
    tool, *opts = cmd
    url = serve(origin, "/gone/missing.tar.gz", b"", status=404)
    real = shutil.which(tool)
    assert real
    plain = run([real, *opts, url], tmp_path / "plain", env_for(home, None))
    shimmed = run([*shim(tool), *opts, url], tmp_path / "shim", env_for(home, cache.url))
    assert plain.returncode == shimmed.returncode == status
    assert tree(tmp_path / "shim") == tree(tmp_path / "plain")
    assert plain.stderr == shimmed.stderr


# --- Names of URLs ending in '/', --next, wget -i URL, redirect limits ------------------


def plain_and_shim(
    cmd: list[str], tmp_path: Path, home: Path, cache: Cache, origin: Origin, shell: str = "dash"
) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str], int]:
    """Run `cmd` with the real tool, then through the shim, each in a directory of
    its own; also say how many requests the shim's run made to the origin."""
    tool, *args = cmd
    real = shutil.which(tool)
    assert real
    plain = run([real, *args], tmp_path / "plain", env_for(home, None))
    asked = len(origin.requests)
    shimmed = run([*shim(tool, shell), *args], tmp_path / "shim", env_for(home, cache.url))
    return plain, shimmed, len(origin.requests) - asked


@pytest.mark.parametrize(
    "cmd, path, status, saved, shell",
    [
        (["curl", "-fsSO"], "/dir/", 23, [], "dash"),  # "Remote file name has no length"
        (["curl", "-fsSO"], "", 23, [], "busybox"),
        (["curl", "-fsS", "-o", "out"], "/dir/", 0, ["out"], "dash"),
        (["curl", "-fsS", "--remote-name-all", "-o", "x"], "/dir/", 0, ["x"], "busybox"),
        (["wget", "-q"], "/dir/", 0, ["index.html"], "dash"),
        (["wget", "-q"], "", 0, ["index.html"], "busybox"),  # https://get.example.com
        (["wget", "-q"], "/dir/?os=linux", 0, ["index.html?os=linux"], "dash"),
        (["wget", "-q", "-P", "d"], "/dir/", 0, ["d/index.html"], "busybox"),
        (["wget", "-q", "--default-page=setup.sh"], "/", 0, ["setup.sh"], "dash"),
    ],
)
def test_urls_ending_in_a_slash_save_what_plain_tools_save(
    shell: str,
    cmd: list[str],
    path: str,
    status: int,
    saved: list[str],
    cache: Cache,
    origin: Origin,
    tmp_path: Path,
    home: Path,
) -> None:
    body = b"an installer script\n"
    serve(origin, path.split("?")[0] or "/", body)
    url = origin.base + path
    cache.plant(url, body)
    plain, shimmed, asked = plain_and_shim([*cmd, url], tmp_path, home, cache, origin, shell)
    assert plain.returncode == shimmed.returncode == status, (plain.stderr, shimmed.stderr)
    assert tree(tmp_path / "shim") == tree(tmp_path / "plain")
    assert sorted(tree(tmp_path / "plain")) == saved
    assert asked == 0  # the shim's run never reached the origin


def test_next_segments_each_go_where_they_can(
    cache: Cache, origin: Origin, tmp_path: Path, home: Path
) -> None:
    one = serve(origin, "/a/one.bin", ORIGINAL + b"1")
    form = serve(origin, "/api/upload", b"accepted")
    three = serve(origin, "/c/three.bin", ORIGINAL + b"3")
    cache.plant(one, CACHED + b"1")
    cache.plant(three, CACHED + b"3")
    cache.plant(form, b"never served")  # a POST is never re-pointed, cached or not
    args = ["-sS", "-o", "1", one, "--next", "-d", "x=1", "-o", "2", form]
    args += ["--next", "-sS", "-o", "3", three]
    r = run([*shim("curl"), *args], tmp_path / "w", env_for(home, cache.url))
    assert r.returncode == 0, r.stderr
    got = [(tmp_path / "w" / n).read_bytes() for n in "123"]
    assert got == [CACHED + b"1", b"accepted", CACHED + b"3"]
    assert [(s.method, s.path) for s in origin.requests] == [("POST", "/api/upload")]


def test_wget_input_file_url_is_read_from_the_cache(
    cache: Cache, origin: Origin, tmp_path: Path, home: Path
) -> None:
    files = [serve(origin, f"/pkgs/p{i}.tar.gz", ORIGINAL + bytes([48 + i])) for i in (1, 2)]
    listing = ("\n".join(files) + "\n").encode()
    # As raw.githubusercontent.com and most servers send a list (sent as text/html,
    # wget would parse it as a page: README, known differences).
    text = {"Content-Type": "text/plain"}
    list_url = serve(origin, "/pkgs/list.txt", listing, headers=text)
    cache.plant(list_url, listing)
    plain, shimmed, _ = plain_and_shim(
        ["wget", "-q", "-i", list_url], tmp_path, home, cache, origin
    )
    assert plain.returncode == shimmed.returncode == 0, shimmed.stderr
    assert tree(tmp_path / "shim") == tree(tmp_path / "plain")
    assert sorted(tree(tmp_path / "shim")) == ["list.txt", "p1.tar.gz", "p2.tar.gz"]
    asked = [s.path for s in origin.requests]
    files = ["/pkgs/p1.tar.gz", "/pkgs/p2.tar.gz"]
    assert asked == ["/pkgs/list.txt", *files, *files]  # the shim's run: no list
    assert [e["status"] for e in log(cache, 2) if e["method"] == "GET"] == [200]


@pytest.mark.parametrize(
    "cmd, status, cached",
    [
        (["wget", "-q", "--max-redirect=0"], 8, False),  # "0 redirections exceeded"
        (["curl", "-fsSL", "--max-redirs", "0", "-O"], 47, False),
        (["curl", "-fsS", "-O"], 0, False),  # no -L: plain saves the redirect's own page
        (["wget", "-q", "--max-redirect=1"], 0, True),
        (["curl", "-fsSL", "--max-redirs", "1", "-O"], 0, True),
    ],
)
def test_redirect_limits_behave_as_plain(
    cmd: list[str],
    status: int,
    cached: bool,
    cache: Cache,
    origin: Origin,
    tmp_path: Path,
    home: Path,
) -> None:
    """The origin redirects; sync fetched what that URL leads to, and recorded that it
    redirects. A command that would not follow uses the origin, as without the shim."""
    target = serve(origin, "/releases/v2/tool.tar.gz", ORIGINAL)
    url = serve(origin, "/releases/latest/tool.tar.gz", b"moved\n", status=302)
    origin.routes["/releases/latest/tool.tar.gz"].headers["Location"] = target
    m = tmp_path / "m.yaml"
    m.write_text(f"artifacts:\n  - {url}\n")
    r = run_withcache("sync", "-q", "--data", str(cache.data), "-m", str(m))
    assert r.returncode == 0, r.stderr
    # The sync has the running nginx reload: the new workers send what it recorded.
    probe = cache.url + keys.cache_path(keys.normalize(url))
    wait_for(lambda: "X-Withcache-Redirect" in requests.head(probe, timeout=5).headers)
    origin.requests.clear()
    plain, shimmed, asked = plain_and_shim([*cmd, url], tmp_path, home, cache, origin)
    assert plain.returncode == shimmed.returncode == status, (plain.stderr, shimmed.stderr)
    assert tree(tmp_path / "shim") == tree(tmp_path / "plain")
    assert (asked == 0) == cached
