"""Bad input to the shims: a garbage WITHCACHE_SERVER, an https cache-host whose
certificate the command does not trust, a list holding both, hosts that never
answer or answer a byte at a time. Each must pass the command through: the same exit
status and the same bytes as plain curl/wget, within the probe's timeout.
"""

from __future__ import annotations

import shutil
import socket
import string
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Cache, free_port, start_nginx, stop_nginx
from tests.origin import Origin
from tests.test_shims import SHELLS, U, fakes, have, run, shim_cmd  # noqa: F401 (a fixture)
from tests.test_shims_e2e import CACHED, ORIGINAL, env_for, log, serve, shim, tree
from tests.tls import CA
from withcache.layout import Layout

TIMEOUT = 0.5


# --- Garbage, by the thousand, through the stand-in tool ---------------------------

ENV_CHARS = st.characters(blacklist_characters="\0", blacklist_categories=("Cs",))
SERVERY = st.one_of(
    st.text(ENV_CHARS, max_size=40),
    st.text(string.printable.replace("\0", ""), max_size=60),
    st.sampled_from(
        [
            "$(touch pwned)",
            "`touch pwned`",
            "; touch pwned",
            "http://x$(touch pwned)",
            "-o pwned",
            "--config=/etc/passwd",
            "-K/etc/passwd",
            "http://[::1",
            "https://",
            "ftp://cache",
            "http:// cache",
            "\n\t ,",
            "http://cache:99999999",
            "x" * 5000,
        ]
    ),
)


GARBAGE = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@GARBAGE
@given(servers=st.lists(SERVERY, min_size=1, max_size=4).map(" ".join))
def test_garbage_never_runs_anything_nor_reaches_an_option(
    servers: str,
    fakes: Path,  # noqa: F811 (the fixture imported above)
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Whatever WITHCACHE_SERVER holds: exit 0, no file made by it, and the command
    is either untouched or points at an http(s) URL of what the list named."""
    cwd = tmp_path_factory.mktemp("garbage")
    for shell in SHELLS:
        have(shell)
        r = run(shell, "curl", ["-sS", U], fakes, server=servers, cwd=cwd)
        assert r.returncode == 0, r.stderr
        assert list(cwd.iterdir()) == []
        assert r.argv[0] == "-sS" and len(r.argv) in (2, 3)
        new = r.argv[1]
        assert new == U or (new.startswith(("http://", "https://")) and "/b/" in new)
        for probe in r.probes:
            assert probe.startswith(("http://", "https://")), probe


# --- Real tools: garbage, untrusted certificates, lists of both ---------------------


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


@pytest.fixture(scope="module")
def rogue(tmp_path_factory: pytest.TempPathFactory, tls_ca: CA) -> Iterator[Cache]:
    """An https cache-host with a self-signed certificate nobody trusts; it holds
    everything the tests plant, so a probe that trusted it would hit."""
    tmp = tmp_path_factory.mktemp("rogue")
    tmp.chmod(0o755)
    d = Layout(tmp / "data").ensure()
    c = start_nginx(d.root, tls=(tls_ca.rogue_cert, tls_ca.rogue_key))
    yield c
    stop_nginx(c.proc)


def quiet_socket() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    return s


@pytest.fixture(scope="module")
def trickle() -> Iterator[str]:
    """Answers 200 and then one byte every 0.2 s, for ever: no read ever times out."""
    s = quiet_socket()
    stop = threading.Event()

    def feed(conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                while not stop.wait(0.2):
                    conn.sendall(b"X")
            except OSError:
                pass

    def accept() -> None:
        s.settimeout(0.05)  # a closed socket does not wake accept(): look at `stop`
        while not stop.is_set():
            try:
                conn, _ = s.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            threading.Thread(target=feed, args=(conn,), daemon=True).start()

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"127.0.0.1:{s.getsockname()[1]}"
    stop.set()
    s.close()
    t.join(5)


@pytest.fixture(scope="module")
def silent() -> Iterator[str]:
    s = quiet_socket()
    yield f"127.0.0.1:{s.getsockname()[1]}"
    s.close()


def bad_servers(kind: str, rogue: Cache, silent: str, trickle: str) -> str:
    return {
        "garbage": "-x://evil ftp://cache $(reboot) http://",
        "bad port": "http://127.0.0.1:99999 127.0.0.1:0",
        "refused": f"127.0.0.1:{free_port()}",
        "untrusted": str(rogue.tls_url),
        "untrusted, plain http": f"https://{str(rogue.url).removeprefix('http://')}",
        "silent": silent,
        "silent https": f"https://{silent}",
        "trickle": trickle,
        "all of them": f"x:// {rogue.tls_url} {silent},{trickle} 127.0.0.1:{free_port()}",
    }[kind]


KINDS = ["garbage", "bad port", "refused", "untrusted", "untrusted, plain http", "silent",
         "silent https", "trickle", "all of them"]  # fmt: skip


CURL_FILE = ["curl", "-fsSL", "-o", "out", "{url}"]
WGET = ["wget", "-q", "{url}"]
MORE = [
    ["curl", "--proto", "=https", "-sSf", "{url}"],
    ["curl", "-fsS", "{gone}"],  # the origin's 404: exit 22 either way
    ["wget", "-q", "-O", "-", "{gone}"],  # exit 8
]
CASES = [(k, c) for c in (CURL_FILE, WGET) for k in KINDS]
CASES += [("all of them", c) for c in MORE] + [("untrusted", MORE[0])]


@pytest.mark.parametrize("kind, cmd", CASES)
def test_bad_servers_pass_through_with_plain_status_and_bytes(
    kind: str,
    cmd: list[str],
    rogue: Cache,
    silent: str,
    trickle: str,
    origin: Origin,
    tls_ca: CA,
    tmp_path: Path,
    home: Path,
) -> None:
    url = serve(origin, "/vendor/tool-1.2.tar.gz", ORIGINAL)
    gone = serve(origin, "/vendor/gone.tar.gz", b"gone\n", status=404)
    rogue.plant(url, CACHED)
    tool, *args = [a.replace("{url}", url).replace("{gone}", gone) for a in cmd]
    real = shutil.which(tool)
    assert real
    plain = subprocess_run([real, *args], tmp_path / "plain", env_for(home, None))
    env = env_for(home, bad_servers(kind, rogue, silent, trickle),
                  WITHCACHE_TIMEOUT=str(TIMEOUT), CURL_CA_BUNDLE=str(tls_ca.ca))  # fmt: skip
    t0 = time.monotonic()
    shimmed = subprocess_run([*shim(tool), *args], tmp_path / "shim", env)
    elapsed = time.monotonic() - t0
    assert (shimmed.returncode, shimmed.stdout) == (plain.returncode, plain.stdout)
    assert tree(tmp_path / "shim") == tree(tmp_path / "plain")
    assert [e["method"] for e in log(rogue) if e["method"] == "GET"] == []
    # Each host that never answers costs one timeout at most (a loose bound: the
    # exact cost is in bench/bench_shim.py); "all of them" lists two.
    hangs = 2 if kind == "all of them" else 1
    assert elapsed < hangs * TIMEOUT + 1.5, elapsed


def subprocess_run(
    argv: list[str], cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[bytes]:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, timeout=60)


def test_an_untrusted_cache_is_used_once_the_command_trusts_it(
    rogue: Cache, origin: Origin, tls_ca: CA, tmp_path: Path, home: Path
) -> None:
    """The probe uses the command's own trust: with -k (or --cacert naming its
    certificate) the same host is fine, without it never."""
    url = serve(origin, "/vendor/tool-1.2.tar.gz", ORIGINAL)
    rogue.plant(url, CACHED)
    env = env_for(home, str(rogue.tls_url))
    r = subprocess_run([*shim("curl"), "-k", "-fsS", url], tmp_path, env)
    assert (r.returncode, r.stdout) == (0, CACHED)
    r = subprocess_run(
        [*shim("curl"), "--cacert", str(tls_ca.rogue_cert), "-fsS", url], tmp_path, env
    )
    assert (r.returncode, r.stdout) == (0, CACHED)
    r = subprocess_run([*shim("wget"), "--no-check-certificate", "-qO-", url], tmp_path, env)
    assert (r.returncode, r.stdout) == (0, CACHED)
    r = subprocess_run([*shim("curl"), "-fsS", url], tmp_path, env)
    assert (r.returncode, r.stdout) == (0, ORIGINAL)


@pytest.mark.parametrize("shell", SHELLS)
def test_a_probe_answered_200_by_a_transfer_that_then_timed_out_is_no_hit(
    shell: str, trickle: str, tmp_path: Path
) -> None:
    """curl prints the status it got (200) even when the probe then times out: that
    200 is not an answer, or the command would hang on the same host."""
    have(shell)
    real = tmp_path / "curl"
    real.symlink_to(shutil.which("curl") or "curl")
    env = {"PATH": "/usr/bin:/bin", "WITHCACHE_SERVER": trickle, "WITHCACHE_TIMEOUT": "0.3",
           "REAL_CURL": str(real), "HOME": str(tmp_path)}  # fmt: skip
    argv = ["-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:9/x.bin"]
    t0 = time.monotonic()
    r = subprocess.run([*shim_cmd(shell, "curl"), *argv], env=env, capture_output=True, timeout=30)
    assert r.stdout == b"000" and r.returncode == 7  # plain curl's: nothing listens on :9
    assert time.monotonic() - t0 < 2
