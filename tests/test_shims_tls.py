"""An https cache-host, and commands whose own options forbid a plain-http cache URL.

The rustup, uv, nvm and Homebrew installers all run `curl --proto '=https' --tlsv1.2
-sSf https://...`. Pointed at an http cache, curl would refuse the URL; so the shim
uses an https cache-host when one is listed, and leaves the command alone otherwise.
A throwaway CA signs the certificate of both the cache and the origin, as a lab's
internal CA would: clients trust it through CURL_CA_BUNDLE, --cacert or
--ca-certificate.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Cache
from tests.origin import Origin
from tests.test_shims_e2e import CACHED, ORIGINAL, env_for, log, run, shim
from tests.tls import CA

SHELLS = ["dash", "busybox"]
INSTALLER = ["--proto", "=https", "--tlsv1.2", "-sSf"]


@pytest.fixture
def tls_origin(tls_ca: CA) -> Iterator[Origin]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tls_ca.cert, tls_ca.key)
    o = Origin(tls=ctx)
    yield o
    o.close()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


def heads_and_gets(cache: Cache, at_least: int = 0) -> list[tuple[object, object]]:
    return [(e["method"], e["status"]) for e in log(cache, at_least)]


@pytest.mark.parametrize("shell", SHELLS)
def test_installer_line_hits_an_https_cache(
    shell: str, tls_cache: Cache, tls_origin: Origin, tls_ca: CA, tmp_path: Path, home: Path
) -> None:
    url = tls_origin.add("/rustup/rustup-init.sh", ORIGINAL)
    tls_cache.plant(url, CACHED)
    assert tls_cache.tls_url
    env = env_for(home, tls_cache.tls_url, CURL_CA_BUNDLE=str(tls_ca.ca))
    r = run([*shim("curl", shell), *INSTALLER, url], tmp_path, env)
    assert (r.returncode, r.stdout, r.stderr) == (0, CACHED.decode(), "")
    assert tls_origin.requests == []
    assert heads_and_gets(tls_cache, 2) == [("HEAD", 200), ("GET", 200)]


@pytest.mark.parametrize("shell", SHELLS)
def test_an_http_cache_is_never_offered_to_proto_https(
    shell: str, tls_cache: Cache, tls_origin: Origin, tls_ca: CA, tmp_path: Path, home: Path
) -> None:
    """Plain curl would exit 1 ("Protocol http not supported"): the shim passes
    the command through untouched instead, and does not even probe."""
    url = tls_origin.add("/uv/install.sh", ORIGINAL)
    tls_cache.plant(url, CACHED)
    env = env_for(home, tls_cache.url, CURL_CA_BUNDLE=str(tls_ca.ca))
    r = run([*shim("curl", shell), *INSTALLER, url], tmp_path, env)
    assert (r.returncode, r.stdout) == (0, ORIGINAL.decode())
    assert heads_and_gets(tls_cache) == []
    # Listed next to an https one, the http cache is skipped, the https one used.
    assert tls_cache.tls_url
    env["WITHCACHE_SERVER"] = f"{tls_cache.url} {tls_cache.tls_url}"
    r = run([*shim("curl", shell), *INSTALLER, url], tmp_path, env)
    assert (r.returncode, r.stdout) == (0, CACHED.decode())
    assert heads_and_gets(tls_cache, 2) == [("HEAD", 200), ("GET", 200)]
    assert [s.method for s in tls_origin.requests] == ["GET"]  # the first run only


def test_the_command_own_proto_is_respected_for_the_origin_too(
    tls_cache: Cache, tls_origin: Origin, tls_ca: CA, tmp_path: Path, home: Path
) -> None:
    """`--proto =http` forbids the https origin: plain curl fails, so must the shim
    (a cache URL over http would have made it succeed: not the same command)."""
    url = tls_origin.add("/x/tool.tar.gz", ORIGINAL)
    tls_cache.plant(url, CACHED)
    env = env_for(home, tls_cache.url, CURL_CA_BUNDLE=str(tls_ca.ca))
    r = run([*shim("curl"), "--proto", "=http", "-sS", url], tmp_path, env)
    assert r.returncode == 1 and "not supported or disabled" in r.stderr
    assert heads_and_gets(tls_cache) == []


@pytest.mark.parametrize("how", ["--cacert", "CURL_CA_BUNDLE"])
def test_curl_trusts_the_lab_ca_either_way(
    how: str, tls_cache: Cache, tls_origin: Origin, tls_ca: CA, tmp_path: Path, home: Path
) -> None:
    url = tls_origin.add("/nvm/install.sh", ORIGINAL)
    tls_cache.plant(url, CACHED)
    assert tls_cache.tls_url
    extra = {"CURL_CA_BUNDLE": str(tls_ca.ca)} if how == "CURL_CA_BUNDLE" else {}
    args = ["--cacert", str(tls_ca.ca)] if how == "--cacert" else []
    env = env_for(home, tls_cache.tls_url, **extra)
    r = run([*shim("curl"), *args, *INSTALLER, "-o", "out", url], tmp_path, env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out").read_bytes() == CACHED
    assert tls_origin.requests == []


@pytest.mark.parametrize("shell", SHELLS)
def test_wget_hits_an_https_cache_with_its_ca_certificate(
    shell: str, tls_cache: Cache, tls_origin: Origin, tls_ca: CA, tmp_path: Path, home: Path
) -> None:
    url = tls_origin.add("/brew/install.sh", ORIGINAL)
    tls_cache.plant(url, CACHED)
    assert tls_cache.tls_url
    env = env_for(home, tls_cache.tls_url)
    args = ["-q", f"--ca-certificate={tls_ca.ca}", url]
    r = run([*shim("wget", shell), *args], tmp_path, env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "install.sh").read_bytes() == CACHED
    assert tls_origin.requests == []
    assert heads_and_gets(tls_cache, 2) == [("HEAD", 200), ("GET", 200)]
