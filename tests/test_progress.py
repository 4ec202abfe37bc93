"""What an operator sees during a sync: a live display on a terminal, lines under cron."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time
from pathlib import Path

from tests.conftest import ROOT, withcache_cmd
from tests.origin import Origin
from withcache.fmt import duration, human


def test_human_units() -> None:
    assert [human(n) for n in (0, 1023, 1536, 5 << 20, 3 << 40)] == [
        "0 B",
        "1023 B",
        "1.5 KiB",
        "5.0 MiB",
        "3.0 TiB",
    ]
    assert [duration(s) for s in (5, 125, 7300)] == ["5s", "2m05s", "2h01m"]


def run_in_pty(cmd: list[str], timeout: float = 60) -> tuple[int, str]:
    """Run with stdin/stdout/stderr on a pseudo-terminal, as in an interactive shell."""
    leader, follower = pty.openpty()
    env = dict(os.environ, PYTHONPATH=str(ROOT), TERM="xterm")
    proc = subprocess.Popen(cmd, stdin=follower, stdout=follower, stderr=follower, env=env)
    os.close(follower)
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    os.close(leader)
    return proc.wait(10), out.decode(errors="replace")


def test_live_display_on_a_terminal(origin: Origin, tmp_path: Path) -> None:
    url = origin.add("/slow/cuda.run", os.urandom(3 << 20), slow=0.03)
    m = tmp_path / "m.yaml"
    m.write_text(f"artifacts:\n  - {url}\n")
    status, out = run_in_pty(withcache_cmd("sync", "--data", str(tmp_path / "d"), "-m", str(m)))
    assert status == 0, out
    assert "\x1b[" in out, "the display redraws in place"
    assert "cuda.run" in out and "%" in out and "/s" in out and "ETA" in out
    assert "0/1 files" in out
    assert "sync: 1 fetched (3.0 MiB), 0 present, 0 failed" in out


def test_plain_lines_when_not_a_terminal(origin: Origin, tmp_path: Path) -> None:
    url = origin.add("/a.bin", b"a" * 5000)
    m = tmp_path / "m.yaml"
    m.write_text(f"artifacts:\n  - {url}\n")
    r = subprocess.run(
        withcache_cmd("sync", "--data", str(tmp_path / "d"), "-m", str(m)),
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert r.returncode == 0
    assert "\x1b[" not in r.stderr
    assert r.stderr.splitlines() == [
        f"[1/1] fetched {url} (4.9 KiB)",
        r.stderr.splitlines()[-1],
    ]
    assert r.stderr.splitlines()[-1].startswith(
        "sync: 1 fetched (4.9 KiB), 0 present, 0 failed in "
    )
