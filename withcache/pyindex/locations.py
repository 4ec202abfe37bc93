"""nginx blocks for the Python index, inserted into withcache's server block.

Static files only: www/simple/<project>/index.html and index.v1json, chosen by
$withcache_simple_ext (a map on Accept in nginx/http.conf.j2). Stock nginx cannot
lower-case a string, so a project asked for under another spelling (Foo_Bar,
foo.bar) is normalised by rewrites: each round lower-cases the first two of every
capital letter and collapses three separator runs, then nginx matches the new URI
again (it allows 10 rounds: names with up to 20 of one capital letter).
"""

from __future__ import annotations

import string

NORMALISED = "[a-z0-9]+(?:-[a-z0-9]+)*"
TOKEN = "(?:[A-Za-z0-9_-]{255}/)*[A-Za-z0-9_-]{1,255}"  # as in $withcache_token's map
METADATA_URI = f"^/b/(?<withcache_meta_token>{TOKEN})/[^/?]*\\.metadata(?:\\?.*)?$"
PAGE_HEADERS = """\
    add_header Vary Accept always;
    add_header Cache-Control "public, max-age=60" always;
    add_header X-Content-Type-Options nosniff always;"""


def _normalising_rewrites() -> str:
    seps = '    rewrite "^(/simple/[^/]*?)(?:[-_.]{2,}|[_.])([^/]*/?)$" $1-$2;'
    lower = [
        f'    rewrite "^(/simple/[^/{c}]*){c}([^/]*/?)$" $1{c.lower()}$2;'
        for c in string.ascii_uppercase
    ]
    return "\n".join([seps, seps, seps, *lower, *lower])


def nginx_locations() -> list[str]:
    """The server-block text for /simple/ and for PEP 658 `<file>.metadata` under /b/."""
    return [
        f"""\
# Python package index (PEP 503 HTML, PEP 691 JSON by Accept), written by `withcache sync`.
location = /simple {{
    absolute_redirect off;
    return 301 /simple/;
}}

location = /simple/ {{
    try_files /simple/index.$withcache_simple_ext =404;
{PAGE_HEADERS}
}}

# A project under its PEP 503 normalised name; an unknown project is a 404.
location ~ "^/simple/(?<withcache_project>{NORMALISED})/$" {{
    try_files /simple/$withcache_project/index.$withcache_simple_ext =404;
{PAGE_HEADERS}
}}

location ~ "^/simple/{NORMALISED}$" {{
    absolute_redirect off;
    return 301 $uri/;
}}

# Any other spelling of a valid name: normalised here, then matched again.
location ~ "^/simple/[A-Za-z0-9._-]*(?:[A-Z_.]|--)[A-Za-z0-9._-]*/?$" {{
{_normalising_rewrites()}
}}""",
        f"""\
# PEP 658/714: installers fetch <file URL>.metadata. A listed wheel's core metadata is
# kept beside its bytes (b/<token>/@metadata); any other *.metadata name is an ordinary
# artifact and served as one. Matched on the raw URI, like $withcache_token.
if ($request_uri ~ "{METADATA_URI}") {{
    rewrite ^ /@withcache-metadata last;
}}

location = /@withcache-metadata {{
    internal;
    try_files /b/$withcache_meta_token/@metadata /b/$withcache_meta_token/@data =404;
    add_header Cache-Control "public, max-age=31536000, immutable";
    add_header X-Content-Type-Options nosniff always;
}}""",
    ]
