"""What nginx needs to render the mirrors: path regexes always, and for mirrors with
`fallthrough: true` their sources, the CA bundle and DNS servers.

Fall-through is nginx's own proxy: a missing /m/<mirror>/<path> is streamed from the
mirror's sources in order (the next one on 404, 5xx, a timeout or a refused or failed
TLS connection), with upstream certificates verified against the system CA bundle and
nothing written to disk by nginx. Every value rendered into the config comes from a
validated manifest (sources: http(s), plain host, safe path characters) or from here.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from withcache import keys
from withcache.errors import NginxError
from withcache.mirrors.config import Mirror
from withcache.mirrors.paths import NAME_RE, PATH_RE

CA_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Arch, Alpine
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL
    "/etc/ssl/ca-bundle.pem",  # openSUSE
    "/etc/ssl/cert.pem",  # Alpine, the BSDs
)
RESOLV_CONF = Path("/etc/resolv.conf")


@dataclass(frozen=True)
class Source:
    """One source as nginx's proxy_pass needs it."""

    scheme: str
    host: str  # as in the URL (an IPv6 literal keeps its brackets)
    authority: str  # host[:port], the port only when not the scheme's default
    path: str  # the base path, ending in '/'

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def sni(self) -> str:
        return self.host.strip("[]")

    @property
    def needs_dns(self) -> bool:
        try:
            ipaddress.ip_address(self.sni)
        except ValueError:
            return True
        return False


@dataclass(frozen=True)
class Route:
    """A fall-through mirror: /m/<name>/ tries these sources in order."""

    index: int
    name: str
    sources: tuple[Source, ...]


def source(url: str) -> Source:
    p = keys.parse(url)
    port = p.port if p.port and p.port != keys.DEFAULT_PORTS[p.scheme] else None
    host = p.host.lower()
    return Source(p.scheme, host, f"{host}:{port}" if port else host, p.path or "/")


def context(mirrors: Sequence[Mirror]) -> dict[str, object]:
    """The template variables for nginx/mirrors*.conf.j2."""
    routes = [
        Route(i, m.name, tuple(source(s) for s in m.sources))
        for i, m in enumerate(mirrors)
        if m.fallthrough
    ]
    sources = [s for r in routes for s in r.sources]
    return {
        "mirror_name_re": NAME_RE,
        "mirror_path_re": PATH_RE,
        "fallthrough": routes,
        "ca_file": ca_file() if any(s.tls for s in sources) else None,
        "resolvers": resolvers() if any(s.needs_dns for s in sources) else [],
    }


def ca_file() -> str:
    """The CA bundle upstream certificates are checked against: $SSL_CERT_FILE when set
    (OpenSSL's own variable), else OpenSSL's default, else the usual system paths."""
    candidates = [os.environ.get("SSL_CERT_FILE", ""), ssl.get_default_verify_paths().cafile or ""]
    for c in [*candidates, *CA_BUNDLES]:
        if c and os.path.isfile(c):
            return os.path.realpath(c)
    raise NginxError(
        "fall-through to https sources verifies them against the system CA bundle, and "
        f"none was found ({', '.join(CA_BUNDLES)}); install ca-certificates or set SSL_CERT_FILE"
    )


def resolvers(resolv_conf: Path = RESOLV_CONF) -> list[str]:
    """nginx's `resolver` addresses: the nameservers of /etc/resolv.conf (nginx does not
    read it, nor /etc/hosts, by itself)."""
    out = []
    try:
        lines = resolv_conf.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                addr = ipaddress.ip_address(parts[1].split("%")[0])
            except ValueError:
                continue
            out.append(f"[{addr}]" if addr.version == 6 else str(addr))
    if not out:
        raise NginxError(
            f"fall-through to a source host name needs a DNS server, and {resolv_conf} "
            "names none; add one there or use IP addresses in the sources"
        )
    return out
