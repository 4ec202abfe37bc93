"""Origin URL -> key -> token -> cache path: the one mapping every part must agree on.

The rules are DESIGN.md's, section Keys. The shims re-implement them in POSIX sh, so
everything here is deliberately byte-oriented and ASCII-only (no IDNA, no Unicode
case folding, no percent-decoding): `tr A-Z a-z` must give the same answer.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

SEGMENT = 255  # NAME_MAX: the longest filename a filesystem takes
DEFAULT_PORTS = {"http": "80", "https": "443"}
BLOB_FILE = "@data"  # the artifact's bytes inside its token directory ('@' is not in base64url)
TOKEN_ALPHABET = re.compile(r"^[A-Za-z0-9_-]+$")
# The token segments of a cache path, as a regex (nginx matches /b/ requests with it):
# full 255-character segments, then one of 1 to 255 characters.
TOKEN_PATH_RE = "(?:[A-Za-z0-9_-]{255}/)*[A-Za-z0-9_-]{1,255}"

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class NotCacheable(ValueError):
    """The URL is not an http(s) URL with a host: shims pass it through, manifests reject it."""


@dataclass(frozen=True)
class ParsedURL:
    """An origin URL cut into the parts normalisation needs, each exactly as written."""

    scheme: str
    userinfo: str | None
    host: str
    port: str | None
    path: str
    query: str | None
    fragment: str | None


def parse(url: str) -> ParsedURL:
    """Split an http(s) URL without decoding or re-encoding anything."""
    m = _SCHEME.match(url)
    if not m:
        raise NotCacheable(f"not an absolute URL: {url!r}")
    scheme = _lower(m.group(1))
    if scheme not in DEFAULT_PORTS:
        raise NotCacheable(f"only http and https are cacheable, got {scheme}:")
    rest = url[m.end() :]
    rest, hash_, fragment = rest.partition("#")
    rest, qmark, query = rest.partition("?")
    slash = rest.find("/")
    authority, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
    userinfo, at, hostport = authority.rpartition("@")
    host, port = _split_port(hostport)
    if not host:
        raise NotCacheable(f"URL has no host: {url!r}")
    if any(c in host for c in " \t\r\n"):
        raise NotCacheable(f"host contains whitespace: {url!r}")
    return ParsedURL(
        scheme=scheme,
        userinfo=userinfo if at else None,
        host=host,
        port=port,
        path=path,
        query=query if qmark else None,
        fragment=fragment if hash_ else None,
    )


def _lower(s: str) -> str:
    """ASCII-only lower-casing (as the shims' `tr A-Z a-z`); str.lower() is the same and
    faster when the text is ASCII."""
    return s.lower() if s.isascii() else s.translate(_ASCII_LOWER)


def _split_port(hostport: str) -> tuple[str, str | None]:
    if hostport.startswith("["):  # IPv6 literal: [2001:db8::1]:443
        end = hostport.find("]")
        if end < 0:
            raise NotCacheable(f"unterminated IPv6 literal: {hostport!r}")
        host, tail = hostport[: end + 1], hostport[end + 1 :]
        if tail and not tail.startswith(":"):
            raise NotCacheable(f"junk after IPv6 literal: {hostport!r}")
        return host, (tail[1:] if tail else None)
    host, colon, port = hostport.partition(":")
    return host, (port if colon else None)


def normalize(url: str, keep_query: bool = False) -> str:
    """The key of an origin URL (DESIGN.md, Keys, rules 1-5)."""
    return normalize_parsed(parse(url), keep_query)


def normalize_parsed(p: ParsedURL, keep_query: bool = False) -> str:
    """normalize() for a URL already parse()d (manifests parse each URL once)."""
    port = p.port
    if port and not (port.isascii() and port.isdigit()):  # the sh shims match [0-9] only
        raise NotCacheable(f"port is not a number: {port!r}")
    authority = _lower(p.host)
    if port and port != DEFAULT_PORTS[p.scheme]:
        authority += ":" + port
    key = f"{p.scheme}://{authority}{p.path or '/'}"
    if keep_query and p.query:
        key += "?" + p.query
    return key


def is_cacheable(url: str) -> bool:
    try:
        normalize(url)
    except NotCacheable:
        return False
    return True


def has_credentials(url: str) -> bool:
    try:
        return parse(url).userinfo is not None
    except NotCacheable:
        return False


def token(key: str) -> str:
    """base64url of the key, padding stripped."""
    return base64.urlsafe_b64encode(key.encode("utf-8")).decode("ascii").rstrip("=")


def decode_token(tok: str) -> str:
    """Inverse of token(); raises ValueError for anything that is not a token of UTF-8 text."""
    if not TOKEN_ALPHABET.match(tok) or len(tok) % 4 == 1:
        raise ValueError("not a base64url token")
    try:
        raw = base64.urlsafe_b64decode(tok + "=" * (-len(tok) % 4))
        return raw.decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError("not a base64url token of UTF-8 text") from exc


def name(key: str) -> str:
    """The last path segment of the key as written, or 'download' when that is empty.

    Keys are normalised (no credentials, fragment or unkept query), so slicing the
    path out is enough; this runs once per artifact on every sync and index.
    """
    rest = key.split("#", 1)[0].split("?", 1)[0].partition("://")[2]
    slash = rest.find("/")
    return (rest[slash:] if slash >= 0 else "/").rsplit("/", 1)[-1] or "download"


def segments(tok: str) -> list[str]:
    """A token cut into consecutive pieces of at most SEGMENT characters."""
    return [tok[i : i + SEGMENT] for i in range(0, len(tok), SEGMENT)] or [""]


def token_dir(key: str) -> str:
    """Relative directory of an artifact under www/: 'b/<seg1>[/<seg2>...]'."""
    return "b/" + "/".join(segments(token(key)))


def blob_relpath(key: str) -> str:
    """Where the artifact's bytes live under www/ (nginx serves this for any name)."""
    return f"{token_dir(key)}/{BLOB_FILE}"


def cache_path(key: str) -> str:
    """The URL path of the artifact on the cache-host: '/b/<segments>/<name>'."""
    return f"/{token_dir(key)}/{name(key)}"


def token_from_path(path: str) -> str | None:
    """The token of a request path under /b/ (name segment dropped), or None."""
    if not path.startswith("/b/"):
        return None
    parts = path[3:].split("/")
    if len(parts) < 2:
        return None
    segs = parts[:-1]
    if not all(s and TOKEN_ALPHABET.match(s) for s in segs):
        return None
    if any(len(s) != SEGMENT for s in segs[:-1]) or len(segs[-1]) > SEGMENT:
        return None
    return "".join(segs)


def key_from_path(path: str) -> str | None:
    """The origin key a /b/ request path names, or None when it names none."""
    tok = token_from_path(path.split("?", 1)[0])
    if tok is None:
        return None
    try:
        key = decode_token(tok)
    except ValueError:
        return None
    return key if is_cacheable(key) else None
