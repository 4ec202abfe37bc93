"""`make demo` walks through the whole cache offline; this runs it without waiting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, free_port


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
    # everything it started is stopped
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(tmp_path / "d") not in ps
