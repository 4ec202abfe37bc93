"""Mirror names and file paths: the one definition manifests, nginx and the watcher share.

A path is what a client appends to a mirror's base URL, and a file name under
www/m/<mirror>/ too, so it is held to a set of characters that mean the same thing
in a URL path, in a file name and in nginx's configuration: no `%` (nothing to
decode twice), no `?`, `#`, `;`, quotes, spaces or control characters, no empty,
`.` or `..` segment, no segment over NAME_MAX. nginx matches its normalised $uri
(percent-decoded, dot segments resolved, slashes merged) against PATH_RE, the same
regex Python uses, so a request that fails here is never looked up on disk and
never reaches a source.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

NAME_RE = "[A-Za-z0-9][A-Za-z0-9._-]{0,62}"
_SEGMENT = r"(?!\.\.?(?:/|$))[A-Za-z0-9._~+@,=:!-]{1,255}"
MAX_PATH = 1024
# A path under a mirror: segments of the safe characters, at most MAX_PATH in all.
PATH_RE = rf"(?=[^/].{{0,{MAX_PATH - 1}}}$)(?:{_SEGMENT}/)*{_SEGMENT}"
MISS_PREFIX = "mirror:"  # misses.key of a mirror path miss: mirror:<name>/<path>
SAFE_CHARS = "A-Z a-z 0-9 . _ ~ + @ , = : ! -"

_NAME = re.compile(f"^{NAME_RE}$")
_PATH = re.compile(f"^{PATH_RE}$")


@dataclass(frozen=True)
class MirrorRef:
    """A file's place under a mirror: served at /m/<name>/<path>."""

    name: str
    path: str

    @property
    def relpath(self) -> str:
        """Where its hard link lives under www/."""
        return f"m/{self.name}/{self.path}"

    @property
    def uri(self) -> str:
        return f"/{self.relpath}"

    @property
    def miss_key(self) -> str:
        return f"{MISS_PREFIX}{self.name}/{self.path}"


def name_problem(name: str) -> str | None:
    """Why a mirror name cannot be used, or None."""
    if _NAME.match(name):
        return None
    return (
        f"mirror name {name!r} must be 1 to 63 letters, digits, '.', '_' or '-', "
        "starting with a letter or digit"
    )


def path_problem(path: str) -> str | None:
    """Why a path cannot be served under a mirror, or None."""
    if _PATH.match(path):
        return None
    if len(path) > MAX_PATH:
        return f"path is {len(path)} characters; at most {MAX_PATH}"
    if path.startswith("/"):
        return f"path {path!r} must be relative to the mirror (no leading '/')"
    for seg in path.split("/"):
        if seg in {"", ".", ".."}:
            return f"path {path!r} has an empty, '.' or '..' segment"
        if len(seg.encode()) > 255:
            return f"path {path!r} has a segment over 255 bytes"
    bad = next((c for c in path if not re.match(r"[A-Za-z0-9._~+@,=:!/-]", c)), "?")
    return f"path {path!r} contains {bad!r}; paths use only {SAFE_CHARS} and '/'"


def is_path(path: str) -> bool:
    return _PATH.match(path) is not None


def from_request(uri: str) -> MirrorRef | None:
    """The mirror file a logged request URI names, as nginx resolved it; None when nginx
    would not look it up (outside /m/, or not a well-formed name and path).

    nginx matched its normalised $uri; the log holds the raw one, so this repeats the
    normalisation: query dropped, percent-decoded, slashes merged, dot segments resolved.
    """
    raw = uri.partition("?")[0]
    if not raw.startswith("/m/") or len(raw) > 4 * MAX_PATH:
        return None
    try:
        decoded = unquote(raw, errors="strict")
    except UnicodeDecodeError:
        return None
    if "\0" in decoded or decoded.endswith(("/", "/.", "/..")):
        return None
    segs: list[str] = []
    for s in decoded.split("/"):
        if s in {"", "."}:
            continue
        if s == "..":
            if not segs:
                return None
            segs.pop()
            continue
        segs.append(s)
    if len(segs) < 3 or segs[0] != "m":
        return None
    name, path = segs[1], "/".join(segs[2:])
    if not _NAME.match(name) or not _PATH.match(path):
        return None
    return MirrorRef(name, path)


def from_miss_key(key: str) -> MirrorRef | None:
    """The mirror file of a `mirror:<name>/<path>` miss key."""
    if not key.startswith(MISS_PREFIX):
        return None
    name, _, path = key[len(MISS_PREFIX) :].partition("/")
    if not _NAME.match(name) or not _PATH.match(path):
        return None
    return MirrorRef(name, path)
