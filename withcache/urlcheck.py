"""Which origin URLs a manifest (and `withcache add`) accepts, and why not.

Stricter than keys.parse(), which must take whatever a shim meets: a URL under review
must be plain http(s) with a host, a port in range, no credentials (they would reach
keys and logs) and nothing that displays differently from what it is.
"""

from __future__ import annotations

import re
import unicodedata

from withcache import keys

WHITESPACE = re.compile(r"\s")
CREDENTIALS = "url contains credentials; they would end up in keys and logs"


def check(url: str) -> tuple[keys.ParsedURL | None, str | None]:
    """(parsed URL, None) when acceptable, else (None, why)."""
    parsed, _, why = _checked(url, keep_query=False)
    return parsed, why


def key(url: str, keep_query: bool) -> tuple[str | None, str | None]:
    """(the URL's key, None) when acceptable, else (None, why): the check and the key
    from one normalisation (a manifest of 10,000 entries pays for each)."""
    _, k, why = _checked(url, keep_query)
    return k, why


def _checked(url: str, keep_query: bool) -> tuple[keys.ParsedURL | None, str | None, str | None]:
    if WHITESPACE.search(url):
        return None, None, f"url contains whitespace: {url!r}"
    hidden = None if url.isascii() and url.isprintable() else _hidden(url)
    if hidden is not None:
        return (
            None,
            None,
            (
                f"url contains the control or formatting character U+{ord(hidden):04X}: "
                f"{url.encode('unicode_escape').decode()!r}"
            ),
        )
    try:
        parsed = keys.parse(url)
        k = keys.normalize_parsed(parsed, keep_query)
    except keys.NotCacheable as exc:
        return None, None, f"'url' must be an http(s) URL with a host: {exc}"
    if parsed.port and not 0 < int(parsed.port) < 65536:
        return None, None, f"url has port {parsed.port}; ports run from 1 to 65535"
    if parsed.userinfo is not None:
        return None, None, CREDENTIALS
    return parsed, k, None


def _hidden(url: str) -> str | None:
    """The first control or formatting character (NUL, ESC, U+202E...), if any."""
    return next((c for c in url if unicodedata.category(c) in {"Cc", "Cf"}), None)


def problem(url: str) -> str | None:
    """Why a URL cannot go into a manifest, or None."""
    return check(url)[1]
