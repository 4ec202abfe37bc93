"""The per-artifact response headers: what the origin told its clients, for the cache to
tell them too.

`curl -OJ` and `wget --content-disposition` name a file after the origin's
Content-Disposition; `wget --trust-server-names` after the URL its redirects led to;
and a client that does not follow redirects (curl without -L, wget --max-redirect=0)
stops at the first one. Sync records all three per artifact (store.Artifact). This
module says which headers each such artifact gets (pure): its Content-Disposition as
the origin sent it, and X-Withcache-Redirect "HOPS SCHEME NAME" (where the redirects
led; NAME ends in '?' when that URL had a query) for the shims. nginx.py renders them
into one location per artifact, in a file the server block includes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from withcache import keys, store

# Printable bytes nginx takes inside a quoted string, '$' excepted (it would start a
# variable); any other value leaves its header unsent rather than the config broken.
_SAFE = re.compile(r"^[\x20-\x23\x25-\x7e\x80-\xff]+$")


def quoted(value: str) -> str | None:
    """`value` (as HTTP headers are read: Latin-1) as an nginx string literal, or None
    when it cannot be one."""
    if not _SAFE.match(value):
        return None
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def redirect_value(a: store.Artifact) -> str | None:
    """ "HOPS SCHEME NAME" for an artifact its origin redirected, else None."""
    if not a.redirects or not a.final_url:
        return None
    parts = urlsplit(a.final_url.removesuffix("?"))
    name = parts.path.rsplit("/", 1)[-1] + ("?" if a.final_url.endswith("?") else "")
    return f"{a.redirects} {parts.scheme} {name}"


def entries(records: Iterable[store.Artifact]) -> list[tuple[str, list[tuple[str, str]]]]:
    """(token as in the URL path, [(header, quoted value)...]) for each artifact that has
    something to say, by key."""
    out = []
    for a in sorted(records, key=lambda r: r.key):
        headers = []
        for name, value in (
            ("Content-Disposition", a.disposition),
            ("X-Withcache-Redirect", redirect_value(a)),
        ):
            q = quoted(value) if value else None
            if q is not None:
                headers.append((name, q))
        if headers:
            out.append(("/".join(keys.segments(keys.token(a.key))), headers))
    return out
