"""Classify one line of nginx's JSON access log: a hit, a miss, or something to count.

Pure: a line in (as `log_format withcache escape=json` writes it), plain data out.
The watcher calls this a million times a minute, so the common paths avoid work:
decoded tokens and timestamps are cached. Everything in a line comes from whoever
sent the request, so nothing is trusted: a token that is not an http(s) URL is
Invalid (counted, never a miss), and a line that is not our JSON is Garbage.
"""

from __future__ import annotations

import json
import json.scanner
import re
from datetime import datetime
from functools import lru_cache
from typing import NamedTuple

from withcache import keys
from withcache.mirrors.paths import MirrorRef, from_request

PROJECT_PREFIX = "python:"  # misses.key of a missing Python project: python:<pep503 name>
MAX_URI = 64 * 1024  # nginx answers 414 long before this; a longer "uri" was not nginx's
MAX_UA = 300  # a user agent is context, not data: keep what a person reads

_PEP508_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)
_PEP503_RUN = re.compile(r"[-_.]+")


class Hit(NamedTuple):
    """A GET answered 200/206 from the tree (HEAD probes are not hits)."""

    key: str
    bytes: int
    time: float


class Miss(NamedTuple):
    """A 404 under /b/ for a token that decodes to an http(s) URL."""

    key: str  # keys.normalize() of the decoded URL: what a manifest entry would produce
    url: str  # the decoded URL as the client sent it (credentials dropped), for display
    time: float
    addr: str
    ua: str


class ProjectMiss(NamedTuple):
    """A 404 under /simple/<project>/: pip or uv asked for a project the index lacks."""

    project: str  # PEP 503 normalised
    time: float
    addr: str
    ua: str

    @property
    def key(self) -> str:
        return PROJECT_PREFIX + self.project


class PageHit(NamedTuple):
    """A GET answered 200/206 under /simple/: a Python index page served (for metrics)."""

    bytes: int


class MirrorHit(NamedTuple):
    """A GET under /m/ answered 200/206 from the tree (not streamed from a source)."""

    ref: MirrorRef
    bytes: int
    time: float


class MirrorMiss(NamedTuple):
    """A GET or HEAD under /m/ the tree could not answer: a 404, or a fall-through
    (streamed from a source, which the log line's `upstream` field shows)."""

    ref: MirrorRef
    time: float
    addr: str
    ua: str

    @property
    def key(self) -> str:
        return self.ref.miss_key

    @property
    def url(self) -> str:
        return self.ref.uri


class Invalid(NamedTuple):
    """A request under /b/ or /simple/ that names no origin URL or project."""

    reason: str


class Ignored(NamedTuple):
    """A well-formed line that is neither a hit nor a miss (index pages, HEAD 200, 304...)."""


class Garbage(NamedTuple):
    """Not a line our nginx wrote: counted and skipped."""

    reason: str


Parsed = Hit | Miss | ProjectMiss | PageHit | MirrorHit | MirrorMiss | Invalid | Ignored | Garbage

IGNORED = Ignored()
_NOT_JSON = Garbage("not JSON")
_NOT_OBJECT = Garbage("not a JSON object")
_NO_FIELDS = Garbage("no uri/status/method")
_BAD_TIME = Garbage("bad time")
_BAD_TOKEN = Invalid("token is not an http(s) URL")
_BAD_PROJECT = Invalid("not a project name")
_BAD_MIRROR_PATH = Invalid("not a mirror name and path")
_LONG_URI = Invalid("uri too long")
_scan = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]

# A line exactly as nginx/http.conf.j2's log_format writes it. Every string is a JSON
# string (no raw quote, backslash or control character; escapes well formed) and every
# number a JSON number, so a match is valid JSON: it is read ~2x faster than by a JSON
# parser. Anything else (another format, extra fields, garbage) takes the JSON path.
_JSTR = r'[^"\\\x00-\x1f]*(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\x00-\x1f]*)*'
_JNUM = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
_EXACT = re.compile(
    rf'\{{"time":"({_JSTR})","addr":"({_JSTR})","method":"({_JSTR})","uri":"({_JSTR})",'
    r'"status":(0|[1-9][0-9]{0,2}),"bytes":(0|[1-9][0-9]{0,18}),'
    rf'"ua":"({_JSTR})","range":"{_JSTR}","rt":{_JNUM}\}}[ \t\r\n]*'
)


def parse_line(line: bytes | str) -> Parsed:
    """Classify one log line (without its newline; a trailing newline is tolerated)."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", "replace")  # nginx writes a client's raw bytes >= 0x80
    if not line.startswith("{"):
        # A crash can leave a run of NUL bytes where a block was never written.
        line = line.lstrip("\0 \t\r\n")
    m = _EXACT.fullmatch(line)
    if m is None:
        return _parse_json(line)
    # Exactly our log_format, and valid JSON by construction: no need for a JSON parser.
    stamp, addr, method, uri, status, nbytes, ua = m.groups()
    if "\\" in line:  # a JSON escape somewhere: decode the fields that have one
        stamp, addr, method, uri, ua = map(_unescape, (stamp, addr, method, uri, ua))
    return _classify(uri, int(status), method, stamp, int(nbytes), addr, ua)


def _parse_json(line: str) -> Parsed:
    """Any other JSON object with at least uri, status and method."""
    try:
        d, end = _scan(line, 0)  # json.loads minus two regex calls and three frames
    except (StopIteration, ValueError, RecursionError):
        return _NOT_JSON
    if end != len(line) and line[end:].strip(" \t\r\n"):
        return _NOT_JSON
    if type(d) is not dict:
        return _NOT_OBJECT
    uri = d.get("uri")
    status = d.get("status")
    method = d.get("method")
    if type(uri) is not str or type(status) is not int or type(method) is not str:
        return _NO_FIELDS
    return _classify(
        uri,
        status,
        method,
        d.get("time"),
        d.get("bytes"),
        d.get("addr"),
        d.get("ua"),
        d.get("upstream"),
    )


def _unescape(s: str) -> str:
    return s if "\\" not in s else str(json.loads(f'"{s}"'))


def _classify(
    uri: str,
    status: int,
    method: str,
    stamp: object,
    nbytes: object,
    addr: object,
    ua: object,
    upstream: object = None,
) -> Parsed:
    mirror = uri.startswith("/m/")
    if mirror or uri.startswith("/b/"):
        # A miss: a GET or HEAD nginx answered 404, or under /m/ streamed from a source
        # (the fall-through log format names the sources it tried). A hit: a GET served.
        fell_through = mirror and type(upstream) is str and upstream != ""
        miss = (status == 404 or fell_through) and (method == "GET" or method == "HEAD")
        if not miss and not ((status == 200 or status == 206) and method == "GET"):
            return IGNORED
        if mirror:
            return _mirror(uri, miss, stamp, nbytes, addr, ua)
        if len(uri) > MAX_URI:
            return _LONG_URI
        path = uri.partition("?")[0]
        wanted = _wanted(path) if miss else None
        served = None if miss else _served_key(path)
        if wanted is None and served is None:
            return _BAD_TOKEN
        when = _when(stamp)
        if when is None:
            return _BAD_TIME
        if wanted is not None:
            return Miss(wanted[0], wanted[1], when, *_client(addr, ua))
        assert served is not None
        return Hit(served, nbytes if type(nbytes) is int and nbytes > 0 else 0, when)
    if status == 404 and uri.startswith("/simple/"):
        if method != "GET" and method != "HEAD":
            return IGNORED
        return _project_miss(uri, stamp, addr, ua)
    if (status == 200 or status == 206) and method == "GET" and uri.startswith("/simple/"):
        return PageHit(nbytes if type(nbytes) is int and nbytes > 0 else 0)
    return IGNORED


def _mirror(
    uri: str, missed: bool, stamp: object, nbytes: object, addr: object, ua: object
) -> Parsed:
    """A hit or miss under /m/ (as _classify found it): named by mirror and path."""
    ref = _mirror_ref(uri) if len(uri) <= MAX_URI else None
    if ref is None:
        return _LONG_URI if len(uri) > MAX_URI else _BAD_MIRROR_PATH
    when = _when(stamp)
    if when is None:
        return _BAD_TIME
    if missed:
        return MirrorMiss(ref, when, *_client(addr, ua))
    return MirrorHit(ref, nbytes if type(nbytes) is int and nbytes > 0 else 0, when)


@lru_cache(maxsize=8192)
def _mirror_ref(uri: str) -> MirrorRef | None:
    return from_request(uri)


def _project_miss(uri: str, stamp: object, addr: object, ua: object) -> Parsed:
    parts = uri.partition("?")[0][len("/simple/") :].split("/")
    if parts == [""] or parts == ["", ""]:
        return IGNORED  # the index root itself: no index configured
    if len(parts) > 2 or (len(parts) == 2 and parts[1] != ""):
        return IGNORED  # deeper paths are files, not projects
    name = parts[0]
    if len(name) > 200 or not _PEP508_NAME.match(name):
        return _BAD_PROJECT
    when = _when(stamp)
    if when is None:
        return _BAD_TIME
    return ProjectMiss(pep503(name), when, *_client(addr, ua))


def pep503(name: str) -> str:
    """PEP 503 normalised project name."""
    return _PEP503_RUN.sub("-", name).lower()


def _client(addr: object, ua: object) -> tuple[str, str]:
    return (
        _storable(addr[:64]) if type(addr) is str else "",
        _storable(ua[:MAX_UA]) if type(ua) is str else "",
    )


def _storable(s: str) -> str:
    """A JSON \\ud800 escape gives a lone surrogate, which SQLite cannot store as UTF-8."""
    return s if s.isascii() else s.encode("utf-8", "replace").decode("utf-8")


@lru_cache(maxsize=8192)
def _served_key(path: str) -> str | None:
    """The key a served /b/ path names: the token decoded as is (nginx found that dir)."""
    return keys.key_from_path(path)


@lru_cache(maxsize=8192)
def _wanted(path: str) -> tuple[str, str] | None:
    """(key, display URL) of a 404'd /b/ path, or None when it names no http(s) URL."""
    decoded = keys.key_from_path(path)
    if decoded is None:
        return None
    try:
        key = keys.normalize(decoded)
    except keys.NotCacheable:
        return None
    return key, (key if keys.has_credentials(decoded) else decoded)


def _when(value: object) -> float | None:
    if type(value) is not str or len(value) > 40:
        return None
    return _epoch(value)


@lru_cache(maxsize=256)
def _epoch(value: str) -> float | None:
    """nginx's $time_iso8601 as a Unix time; lines of one second share one string."""
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return None
    if t.tzinfo is None:
        return None
    return t.timestamp()
