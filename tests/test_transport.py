"""What sync reads from the environment to reach origins: ~/.netrc and *_proxy.

A lab behind a proxy, or with credentials in ~/.netrc as curl and pip use them, must
get the same downloads from `withcache sync` as from curl.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_withcache
from tests.origin import Origin
from tests.test_sync import manifest
from withcache import keys
from withcache.layout import Layout
from withcache.tree import blob_path

BODY = b"installer bytes " * 1000


@pytest.fixture
def other() -> Iterator[Origin]:
    o = Origin()
    yield o
    o.close()


def blob(data: Path, url: str) -> bytes:
    return blob_path(Layout(data), keys.normalize(url)).read_bytes()


def test_netrc_credentials_go_to_their_host_only(
    origin: Origin, other: Origin, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / ".netrc").write_text("machine 127.0.0.1 login lab password s3cret\n")
    (home / ".netrc").chmod(0o600)
    # the redirect target is another host (localhost), which the netrc does not name
    target = f"http://localhost:{other.port}/dl/tool.bin"
    other.add("/dl/tool.bin", BODY)
    url = origin.add("/tool.bin", b"", status=302, headers={"Location": target})
    plain = origin.add("/plain.bin", BODY)
    m = manifest(tmp_path, [f"- {url}", f"- {plain}"])
    data = tmp_path / "data"
    r = run_withcache("sync", "-q", "--data", str(data), "-m", str(m), env={"HOME": str(home)})
    assert r.returncode == 0, r.stderr
    expected = "Basic " + base64.b64encode(b"lab:s3cret").decode()
    assert [s.headers.get("Authorization") for s in origin.requests] == [expected, expected]
    assert [s.headers.get("Authorization") for s in other.requests] == [None]
    assert blob(data, url) == blob(data, plain) == BODY


def test_a_proxy_from_the_environment_carries_every_download(
    origin: Origin, tmp_path: Path
) -> None:
    """The proxy (our origin, answering absolute-form requests) is the only way to the
    vendor's host, which does not resolve here."""
    url = "http://vendor.invalid/pkg/tool-1.0.tar.gz"
    origin.add(url, BODY)
    m = manifest(tmp_path, [f"- url: {url}", f"  sha256: {hashlib.sha256(BODY).hexdigest()}"])
    data = tmp_path / "data"
    env = {"http_proxy": origin.base.removeprefix("http://"), "no_proxy": ""}  # as curl takes it
    r = run_withcache("sync", "-q", "--data", str(data), "-m", str(m), env=env)
    assert r.returncode == 0, r.stderr
    assert [(s.method, s.path) for s in origin.requests] == [("GET", url)]
    assert blob(data, url) == BODY
    # no_proxy sends a host past the proxy: vendor.invalid is then unreachable
    r = run_withcache(
        "sync", "-q", "--retries", "0", "--data", str(tmp_path / "d2"), "-m", str(m),
        env=dict(env, no_proxy="vendor.invalid"),
    )  # fmt: skip
    assert r.returncode == 1 and "cannot connect" in r.stderr
    assert len(origin.requests) == 1


def test_a_manifest_header_replaces_ours_whatever_its_case(origin: Origin, tmp_path: Path) -> None:
    """Some vendors serve only known agents: the entry's user-agent is the one sent."""
    url = origin.add("/agent.bin", BODY)
    m = manifest(tmp_path, [f"- url: {url}", "  headers: {user-agent: Lab-Fetcher/2}"])
    r = run_withcache("sync", "-q", "--data", str(tmp_path / "data"), "-m", str(m))
    assert r.returncode == 0, r.stderr
    (seen,) = origin.requests
    agents = [v for k, v in seen.headers.items() if k.lower() == "user-agent"]
    assert agents == ["Lab-Fetcher/2"]
