"""The PyPI `withcache` package's own shims must hit our nginx (DESIGN.md, Keys).

Its shims encode the URL as typed with the same unpadded base64url, so for an
already-normal URL they ask for exactly the path our tree serves. The package is
installed into a throwaway venv (its import name clashes with ours), never into
the test environment's site-packages.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Cache
from tests.origin import Origin
from withcache.cli import main

PEER = "withcache==0.13.3"


@pytest.fixture(scope="session")
def peer_venv() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "withcache-tests"
    venv = base / "peer-0.13.3"
    if not (venv / "bin" / "curlwithcache").exists():
        base.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        r = subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", PEER],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if r.returncode != 0:
            pytest.skip(f"cannot install {PEER}: {r.stderr.strip()[-300:]}")
    return venv


def peer_shims(venv: Path) -> dict[str, list[str]]:
    """Its native (compiled) shim and its pure-Python one."""
    return {
        "native": [str(venv / "bin" / "curlwithcache")],
        "python": [str(venv / "bin" / "python"), "-m", "withcache.curlwithcache"],
    }


@pytest.mark.parametrize("flavour", ["native", "python"])
def test_peer_curlwithcache_hits_our_tree(
    peer_venv: Path, flavour: str, cache: Cache, origin: Origin, tmp_path: Path
) -> None:
    body = os.urandom(300_000)
    url = origin.add("/vendor/cuda_12.6.3_linux.run", body)
    m = tmp_path / "m.yaml"
    m.write_text(f"artifacts:\n  - {url}\n")
    assert main(["sync", "--data", str(cache.data), "-m", str(m), "-q"]) == 0
    fetched_by_sync = len(origin.requests)

    out = tmp_path / "out.run"
    env = dict(os.environ, WITHCACHE_SERVER=cache.url, REAL_CURL="/usr/bin/curl")
    cmd = [*peer_shims(peer_venv)[flavour], "-fsS", "-o", str(out), url]
    r = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(body).digest()
    assert len(origin.requests) == fetched_by_sync, "the origin must not be asked"
    gets = cache.log_lines(1, where=lambda line: '"method":"GET","uri":"/b/' in line)
    assert 200 in [json.loads(line)["status"] for line in gets]
