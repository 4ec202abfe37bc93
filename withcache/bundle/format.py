"""What an offline bundle holds and how each part is written: pure, no I/O.

    BUNDLE.json         format, version, where and when it was made, sha256 of CONTENTS
    CONTENTS            "<sha256>  <path>" for every file below (`sha256sum -c` reads it)
    records.jsonl       one artifact record per line: key, url, name, size, sha256, ...
    manifests/<name>    the manifests as the last sync read them
    python/pyindex.json the Python index's plan; python/simple/... its pages
    blobs/<sha256>      artifact bytes, once per distinct sha256

In a tar the members come in that order, so a reader knows everything it should find
before the first blob arrives and can name exactly what a truncated copy lacks. Every
name a reader acts on is checked against these shapes; nothing else is ever written.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from withcache.store import Artifact

FORMAT = "withcache-bundle"
VERSION = 1
HEADER = "BUNDLE.json"
CONTENTS = "CONTENTS"
RECORDS = "records.jsonl"
PLAN = "python/pyindex.json"
HEX64 = re.compile(r"^[0-9a-f]{64}$")
_MANIFEST = re.compile(r"^manifests/[A-Za-z0-9_][A-Za-z0-9._-]{0,200}$")
_PAGE = re.compile(r"^python/simple/(?:[a-z0-9]+(?:-[a-z0-9]+)*/)?index\.(?:html|v1json)$")
_SOURCE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
MAX_KEY = 64 * 1024


class Damaged(Exception):
    """A part of the bundle is not what its header says: the message names it."""


def blob_name(sha256: str) -> str:
    return f"blobs/{sha256}"


def sha_of_blob(name: str) -> str | None:
    """The sha256 a blobs/ member is named for, or None for any other name."""
    if name.startswith("blobs/") and HEX64.match(name[6:]):
        return name[6:]
    return None


def is_manifest(name: str) -> bool:
    return bool(_MANIFEST.match(name))


def is_page(name: str) -> bool:
    return bool(_PAGE.match(name))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- CONTENTS -------------------------------------------------------------------------------


def contents_text(entries: Iterable[tuple[str, str]]) -> bytes:
    """(path, sha256) pairs in sha256sum's format."""
    return "".join(f"{sha}  {path}\n" for path, sha in entries).encode()


def parse_contents(data: bytes) -> dict[str, str]:
    """{path: sha256}; raise Damaged on any line that is not '<hex64>  <path>'."""
    out: dict[str, str] = {}
    for n, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        sha, sep, path = line.partition("  ")
        if not sep or not HEX64.match(sha) or not path or path in out:
            raise Damaged(f"{CONTENTS}: line {n} is damaged: {line[:80]!r}")
        out[path] = sha
    return out


# --- BUNDLE.json --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Header:
    """The first member: what made the bundle, and the sha256 that anchors the rest."""

    created: str
    source: str  # host:data dir it was exported from
    contents_sha256: str
    artifacts: int
    total: int  # bytes of the artifacts it holds
    since: str | None = None
    subset: tuple[str, ...] = ()

    def encode(self) -> bytes:
        doc = {"format": FORMAT, "version": VERSION, **asdict(self)}
        doc["subset"] = list(self.subset)
        return (json.dumps(doc, indent=1) + "\n").encode()


def parse_header(data: bytes) -> Header:
    try:
        doc = json.loads(data)
        if doc.get("format") != FORMAT:
            raise Damaged(f"{HEADER}: not a withcache bundle")
        if doc.get("version") != VERSION:
            raise Damaged(
                f"{HEADER}: version {doc.get('version')!r}; this withcache reads {VERSION}"
            )
        h = Header(
            created=str(doc["created"]),
            source=str(doc["source"]),
            contents_sha256=str(doc["contents_sha256"]),
            artifacts=int(doc["artifacts"]),
            total=int(doc["total"]),
            since=doc.get("since"),
            subset=tuple(map(str, doc.get("subset") or ())),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise Damaged(f"{HEADER} is damaged: {exc}") from None
    if not HEX64.match(h.contents_sha256):
        raise Damaged(f"{HEADER} is damaged: contents_sha256 {h.contents_sha256!r}")
    return h


# --- records.jsonl ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """A record as a bundle carries it, with its blob's modification time there."""

    artifact: Artifact
    mtime: float | None = None


def records_text(records: Iterable[Record]) -> bytes:
    lines = []
    for r in records:
        d = asdict(r.artifact)
        d["mtime"] = r.mtime
        lines.append(json.dumps(d, sort_keys=True) + "\n")
    return "".join(lines).encode()


def parse_records(data: bytes) -> list[Record]:
    """Every record, each checked field by field; raise Damaged naming the first bad line."""
    out: list[Record] = []
    for n, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        try:
            d = json.loads(line)
            a = Artifact(
                key=d["key"],
                url=d["url"],
                name=d["name"],
                size=d["size"],
                sha256=d["sha256"],
                fetched_at=float(d["fetched_at"]),
                etag=d.get("etag"),
                last_modified=d.get("last_modified"),
                source=d["source"],
            )
            mtime = None if d.get("mtime") is None else float(d["mtime"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise Damaged(f"{RECORDS}: line {n} is damaged: {exc}") from None
        problem = record_problem(a)
        if problem:
            raise Damaged(f"{RECORDS}: line {n}: {problem}")
        out.append(Record(a, mtime))
    return out


def record_problem(a: Artifact) -> str | None:
    """Why a record cannot be placed as it is, or None."""
    for name in ("key", "url", "name", "sha256", "source"):
        if not isinstance(getattr(a, name), str) or not getattr(a, name):
            return f"{name} must be a non-empty string"
    for name in ("etag", "last_modified"):
        if getattr(a, name) is not None and not isinstance(getattr(a, name), str):
            return f"{name} must be a string"
    if not isinstance(a.size, int) or isinstance(a.size, bool) or a.size < 0:
        return "size must be a whole number of bytes"
    if not HEX64.match(a.sha256):
        return f"sha256 {a.sha256[:80]!r} is not 64 hex digits"
    if len(a.key) > MAX_KEY or not a.key.startswith(("http://", "https://")):
        return f"key {a.key[:80]!r} is not an http(s) URL"
    if not _SOURCE.match(a.source):
        return f"source {a.source[:40]!r} is not a source name"
    if "/" in a.name or "\0" in a.name:
        return f"name {a.name[:80]!r} is not a file name"
    return None
