"""An edge cache: nginx's own proxy_cache in front of a center, with no tree of its own.

A site that needs only the hot set (a cluster pulling one installer, a second building)
runs nginx with `slice`, `proxy_cache_lock` and `proxy_cache_use_stale` against the
center. withcache only renders that configuration (nginx/edge*.conf.j2) and runs it:
no cache and no protocol of our own. The edge writes the same JSON access log as the
center, so `withcache watch --data DIR` works there too.

An edge data dir holds `cache/` (nginx's cache, bounded by max_size and min_free),
`run/` (config, pid, temp files), `log/access.log` and, for a watcher, `state/`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from withcache import nginx, role
from withcache.errors import UsageError
from withcache.layout import Layout

CA_FILE = Path("/etc/ssl/certs/ca-certificates.crt")  # Debian's system CA bundle
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*\.?$")
_IPV6 = re.compile(r"^[0-9A-Fa-f:.]+$")
_SIZE = re.compile(r"^[1-9][0-9]{0,15}[kKmMgG]?$")  # nginx's size syntax, nothing more
_SLICE = re.compile(r"^[1-9][0-9]{0,9}[kKmM]?$")  # `slice` takes no g suffix


@dataclass(frozen=True)
class Center:
    """Where an edge fetches from: a center or a replica, as http(s)://host[:port]."""

    scheme: str
    host: str  # a name, an IPv4 address, or an IPv6 address without brackets
    port: int

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def address(self) -> str:
        """host:port for nginx's upstream `server` directive."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.netloc}"


def parse_center(text: str) -> Center:
    """`http://center:8080` -> Center; anything nginx could misread is refused."""
    why = _center_problem(text)
    if why:
        raise UsageError(f"--edge {text!r}: {why}")
    parts = urlsplit(text)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return Center(parts.scheme, host, port)


def _center_problem(text: str) -> str | None:
    if any(c.isspace() or c in ";{}'\"\\$" for c in text):
        return "must be a plain URL like http://center:8080"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        return f"not a URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return "must start with http:// or https://"
    if parts.username is not None or parts.password is not None:
        return "credentials do not belong in the URL (the edge passes each client's own)"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return "give the center's root URL only (http://host:port), no path or query"
    host = parts.hostname or ""
    if not host or not (_HOSTNAME.match(host) or (":" in host and _IPV6.match(host))):
        return "no valid host name"
    if port is not None and not 0 < port < 65536:
        return "port out of range"
    return None


@dataclass(frozen=True)
class EdgeSettings:
    """Everything the edge templates need; the base context is the center's, so both
    configs render http.conf.j2 (log format and maps) from the same values."""

    layout: Layout
    centers: Sequence[Center]
    listen: Sequence[str] = ("8080",)
    user: str | None = None
    error_log: str | None = None
    workers: str = "auto"
    server_name: str = "_"
    max_size: str = "100g"
    min_free: str = "5g"
    slice: str = "8m"
    miss_ttl: str = "2s"  # how long a 404 is remembered
    page_ttl: str = "10s"  # how long a page is used before revalidating it
    connect_timeout: str = "3s"

    def __post_init__(self) -> None:
        if not self.centers:
            raise UsageError("--edge needs the center's URL")
        schemes = {c.scheme for c in self.centers}
        if len(schemes) > 1:
            raise UsageError("--edge URLs must all be http or all https")
        if "https" in schemes and len(self.centers) > 1:
            raise UsageError("with https, give one --edge URL (one certificate name to verify)")
        for name, value, pattern in (
            ("--max-size", self.max_size, _SIZE),
            ("--min-free", self.min_free, _SIZE),
            ("--slice", self.slice, _SLICE),
        ):
            if not pattern.match(value):
                raise UsageError(f"{name} wants a size like 512m or 100g, got {value!r}")

    @property
    def cache(self) -> Path:
        return cache_dir(self.layout)

    def context(self) -> dict[str, object]:
        base = nginx.Settings(
            layout=self.layout,
            listen=self.listen,
            user=self.user,
            error_log=self.error_log,
            workers=self.workers,
            server_name=self.server_name,
        ).context()
        first = self.centers[0]
        base.update(
            cache=cache_dir(Layout(self.layout.root.resolve())),
            centers=list(self.centers),
            scheme=first.scheme,
            center_host=first.netloc,
            center_name=first.host,
            ca_file=CA_FILE,
            max_size=self.max_size,
            min_free=self.min_free,
            slice=self.slice,
            miss_ttl=self.miss_ttl,
            page_ttl=self.page_ttl,
            connect_timeout=self.connect_timeout,
        )
        return base


def cache_dir(layout: Layout) -> Path:
    return layout.root / "cache"


def render_standalone(s: EdgeSettings) -> str:
    """The whole nginx.conf `withcache serve --edge` runs."""
    return nginx.render_template("edge-nginx.conf.j2", s.context())


def render_snippet(s: EdgeSettings) -> str:
    """What `withcache nginx-config --edge` prints for a system nginx's conf.d/."""
    return nginx.render_template("edge-conf.d.conf.j2", s.context())


def write_config(s: EdgeSettings) -> Path:
    """Render the standalone config into DIR/run/nginx.conf and create the edge's dirs
    (no www/: an edge holds no tree)."""
    if s.centers[0].scheme == "https" and not CA_FILE.exists():
        raise UsageError(f"an https center needs the system CA bundle {CA_FILE} (ca-certificates)")
    lay = s.layout
    for d in (lay.run, lay.log_dir, lay.state, s.cache):
        d.mkdir(parents=True, exist_ok=True)
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (lay.run / sub).mkdir(exist_ok=True)
    lay.access_log.touch(exist_ok=True)
    role.mark_edge(lay, s.centers[0].url)  # its watcher then renders no index
    conf = lay.run / "nginx.conf"
    conf.write_text(render_standalone(s))
    return conf
