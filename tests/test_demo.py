"""`make demo` walks through the whole cache offline; this runs it without waiting."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port

DEMO = [sys.executable, "-m", "withcache.demo"]


@pytest.fixture(autouse=True)
def one_demo_at_a_time(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The demo's origin listens on the port its manifest names: one demo at a time,
    across pytest-xdist's workers (they share the parent of their base temp dirs)."""
    with open(tmp_path_factory.getbasetemp().parent / "demo.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def test_demo_shows_a_hit_a_miss_a_mirror_a_private_index_and_metrics(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    listen = f"127.0.0.1:{free_port()}"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "withcache.demo",
            "--no-wait",
            "--data",
            str(tmp_path / "d"),
            "--listen",
            listen,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "sync: 5 fetched" in r.stderr
    assert "origin asked 0 times (0 = served by the cache)" in out
    assert "fetched from the origin (1 request)" in out
    misses = out[out.index("withcache misses:") :]
    assert "not-in-any-manifest-1.0.tar.gz" in misses
    assert f"http://{listen}/" in out
    assert "HTTP 200, 524288 bytes" in out  # the path mirror
    assert "401 without a password, lists the wheel with it: True" in out
    assert 'withcache_hits_total{area="m"} 1' in out
    assert str(tmp_path / "d") not in _processes(), "everything it started is stopped"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_demo_stopped_by_a_signal_leaves_nothing_running(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """`timeout make demo`, `kill`, or a closed terminal: the demo stops what it started
    (serve's nginx and upload service, the watcher), as Ctrl-C does, and frees the port."""
    tmp_path.chmod(0o755)
    host, port = "127.0.0.1", free_port()
    demo = subprocess.Popen(
        [*DEMO, "--data", str(tmp_path / "d"), "--listen", f"{host}:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    guard = threading.Timer(180, demo.kill)  # a demo that never gets there fails the test
    guard.start()
    try:
        assert demo.stdout is not None
        seen = ""
        while "Running until Ctrl-C." not in seen:
            line = demo.stdout.readline()
            assert line, f"the demo ended before it was running:\n{seen}"
            seen += line
        assert str(tmp_path / "d") in _processes()
        demo.send_signal(sig)
        assert demo.wait(60) == 0
        left = _processes()
    finally:
        guard.cancel()
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        _kill_all_of(str(tmp_path / "d"))  # so that a failure leaves nothing behind
    assert str(tmp_path / "d") not in left
    with pytest.raises(ConnectionRefusedError), socket.create_connection((host, port), 2):
        pass


def _kill_all_of(marker: str) -> None:
    """SIGKILL every process whose command line holds `marker`."""
    for line in _processes("pid,args").splitlines():
        pid, _, args = line.strip().partition(" ")
        if marker in args:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)


def _processes(columns: str = "args") -> str:
    """Every process's command line, whole (`ww`: not cut at the terminal's width)."""
    return subprocess.run(["ps", "-eww", "-o", columns], capture_output=True, text=True).stdout
