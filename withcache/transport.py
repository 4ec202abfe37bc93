"""The HTTP client downloads use: urllib3's connection pools, nothing on top.

Each download is one GET whose body fetch.py reads straight into its own buffers, so
the layers requests adds (sessions, cookies, hooks, content decoding) were pure cost:
about a millisecond of CPU per file and a tenth of a second of imports per command.
What requests did read from the environment is kept here, read once per client:
a CA bundle (REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE; else the system's store, which is
where a lab installs its internal CA), proxies (*_proxy, no_proxy) and ~/.netrc.
Redirects are followed by fetch.py, hop by hop, so each hop passes `allowed` again.
"""

from __future__ import annotations

import base64
import functools
import netrc
import os
import threading
from collections.abc import Callable, Hashable
from urllib.parse import urlsplit

import urllib3
from urllib3 import HTTPHeaderDict
from urllib3.exceptions import HTTPError, LocationValueError

from withcache import __version__

USER_AGENT = f"withcache-sync/{__version__}"

Response = urllib3.BaseHTTPResponse


class Refused(Exception):
    """A URL this client will not fetch (an invalid URL, or a host not allowed)."""


class Unreachable(Exception):
    """No response: the connection could not be made, or broke before the headers."""


def allowed(url: str, hosts: frozenset[str]) -> bool:
    """Is the URL's host (or host:port) one of `hosts`? Case-insensitive, exact."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:
        return False
    return host in hosts or (port is not None and f"{host}:{port}" in hosts)


class Client:
    """One thread's connections (kept alive between files), optionally limited to the
    hosts in `only` (every redirect hop included)."""

    def __init__(self, only: frozenset[str] | None = None, *, why: str = "not allowed") -> None:
        self.only = only
        self.why = why
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        self._options: dict[str, object] = {"maxsize": 1, "ca_certs": bundle or None}
        self._direct = urllib3.PoolManager(**self._options)  # type: ignore[arg-type]
        self._proxied: dict[str, urllib3.ProxyManager] = {}

    def request(
        self,
        url: str,
        headers: dict[str, str],
        timeout: tuple[float, float],
        method: str = "GET",
    ) -> Response:
        """GET (or HEAD) `url` without following redirects; the body is left unread.
        Raises Refused or Unreachable."""
        if self.only is not None and not allowed(url, self.only):
            raise Refused(f"{url}: {self.why}; not fetched")
        sent = HTTPHeaderDict({"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
        for name, value in headers.items():  # a manifest's user-agent replaces ours
            sent[name] = value
        if "Authorization" not in sent and _netrc_in_use():
            auth = _netrc_auth(url)
            if auth:
                sent["Authorization"] = auth
        try:
            return self._manager(url).urlopen(
                method,
                url,
                headers=sent,
                redirect=False,
                retries=False,
                preload_content=False,
                decode_content=False,
                timeout=urllib3.Timeout(connect=timeout[0], read=timeout[1]),
            )
        except LocationValueError as exc:
            raise Refused(f"invalid URL {url!r}: {exc}") from exc
        except (HTTPError, OSError, ValueError) as exc:
            raise Unreachable(str(exc)) from exc

    def _manager(self, url: str) -> urllib3.PoolManager:
        proxy = _proxy_for(url) if _proxies_in_use() else None
        if proxy is None:
            return self._direct
        manager = self._proxied.get(proxy)
        if manager is None:
            manager = self._proxied[proxy] = urllib3.ProxyManager(proxy, **self._options)  # type: ignore[arg-type]
        return manager

    def close(self) -> None:
        self._direct.clear()
        for m in self._proxied.values():
            m.clear()


class Clients:
    """Clients kept per thread, each reused from request to request (its connections
    stay alive), made on first use and closed together: what a pool of download threads
    needs (sync's workers, auto-fill, a dry run's HEADs)."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._all: list[Client] = []
        self._lock = threading.Lock()

    def get(self, make: Callable[[], Client] = Client, key: Hashable = None) -> Client:
        """This thread's client for `key`, made by `make()` the first time."""
        mine: dict[Hashable, Client] = self._local.__dict__.setdefault("clients", {})
        c = mine.get(key)
        if c is None:
            c = mine[key] = make()
            with self._lock:
                self._all.append(c)
        return c

    def close(self) -> None:
        for c in self._all:
            c.close()


@functools.cache
def _proxies_in_use() -> bool:
    return any(k.lower().endswith("_proxy") and v for k, v in os.environ.items())


def _proxy_for(url: str) -> str | None:
    """The proxy the environment names for this URL (no_proxy honoured), if any."""
    import urllib.request  # 18 ms of imports, paid only where a proxy is set up

    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme.lower()) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(parts.netloc):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"  # `host:3128`, as curl reads it


@functools.cache
def _netrc_in_use() -> bool:
    return _netrc_file() is not None


def _netrc_file() -> str | None:
    named = os.environ.get("NETRC")
    if named:
        return named if os.path.exists(named) else None
    home = os.path.expanduser("~")
    for name in (".netrc", "_netrc"):
        path = os.path.join(home, name)
        if os.path.exists(path):
            return path
    return None


def _netrc_auth(url: str) -> str | None:
    """Basic credentials ~/.netrc holds for the URL's host, as curl and requests use them."""
    path = _netrc_file()
    host = urlsplit(url).hostname
    if path is None or not host:
        return None
    try:
        found = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return None
    if not found:
        return None
    login, _account, password = found
    token = base64.b64encode(f"{login}:{password or ''}".encode()).decode()
    return f"Basic {token}"
