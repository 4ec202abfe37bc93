"""`withcache misses import FILE`: other hosts' misses merged here, reviewed in one place.

A replica serves its own clients, so only its watcher sees what they missed. Its
`withcache misses --json` lists running totals per miss and names the data dir they
come from (`source`, a random id kept in that data dir's state DB). The center keeps,
per source and miss, the totals it imported last and adds only their growth: importing
the same file twice, or an older file after a newer one, adds nothing.

Distinct clients cannot be merged exactly without the addresses (which stay on each
host), so a miss's `clients` is the center's own distinct clients plus each source's
count: an upper bound.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from withcache import keys, store
from withcache.accesslog import MAX_UA, PROJECT_PREFIX, pep503
from withcache.errors import UsageError
from withcache.mirrors import paths as mirror_paths

MAX_FILE = 256 << 20
MAX_COUNT = 1 << 53  # exact in JSON readers and in SQLite's REAL min/max
MAX_PROBLEMS = 20
_SOURCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,99}$")
_PROJECT = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,198}[A-Za-z0-9])?$")
FUTURE_SLACK = 86400.0  # clocks disagree, but not by a day


class ImportProblems(UsageError):
    """Everything wrong with an import file; nothing was imported."""

    def __init__(self, where: str, problems: list[str]) -> None:
        super().__init__(where, problems)
        self.where = where
        self.problems = problems

    def __str__(self) -> str:
        shown = [f"{self.where}: {p}" for p in self.problems[:MAX_PROBLEMS]]
        if len(self.problems) > MAX_PROBLEMS:
            shown.append(f"{self.where}: ... and {len(self.problems) - MAX_PROBLEMS} more")
        return "\n".join([*shown, "nothing was imported"])


@dataclass(frozen=True)
class Row:
    """One miss as another host counted it (running totals)."""

    source: str
    key: str
    url: str
    kind: str  # "url" | "project"
    count: int
    clients: int
    first_seen: float
    last_seen: float
    last_ua: str


@dataclass(frozen=True)
class Summary:
    rows: int
    new: int  # misses this data dir had not seen
    requests: int  # requests added (growth since the last import)
    sources: tuple[str, ...]


def instance_id(conn: sqlite3.Connection) -> str:
    """This data dir's id as a source of misses, created on first use."""
    conn.execute("INSERT OR IGNORE INTO instance (one, id) VALUES (1, ?)", (uuid.uuid4().hex,))
    return str(conn.execute("SELECT id FROM instance").fetchone()[0])


def parse(text: str, where: str, source: str | None = None, now: float | None = None) -> list[Row]:
    """The rows of a `misses --json` file, all checked; raise ImportProblems listing
    every bad row. `source` names the host for files without source ids."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ImportProblems(where, [f"not JSON ({exc})"]) from None
    if not isinstance(doc, list):
        raise ImportProblems(where, ["not a JSON array (the output of `withcache misses --json`)"])
    if source is not None and not _SOURCE.match(source):
        raise ImportProblems(where, [f"--source {source!r}: letters, digits and ._:@- only"])
    limit = (time.time() if now is None else now) + FUTURE_SLACK
    rows, problems = [], []
    for i, item in enumerate(doc, 1):
        try:
            row = _row(item, source, limit)
        except ValueError as exc:
            problems.append(f"row {i}: {exc}")
            continue
        if row is not None:
            rows.append(row)
    if problems:
        raise ImportProblems(where, problems)
    return rows


def _row(item: object, source: str | None, limit: float) -> Row | None:
    if not isinstance(item, dict):
        raise ValueError("not an object")
    src = item.get("source", source) if source is None else source
    if not isinstance(src, str) or not _SOURCE.match(src):
        raise ValueError(
            "no valid 'source' (export with this version of withcache, or pass --source NAME)"
        )
    count = _int(item, "count")
    clients = _int(item, "clients", default=0)
    kind = item.get("kind", "url")
    key, url = item.get("key"), item.get("url")
    if not isinstance(key, str) or not isinstance(url, str):
        raise ValueError("'key' and 'url' must be strings")
    if kind == "url":
        _check_url(key, url)
    elif kind == "project":
        if not _PROJECT.match(url) or key != PROJECT_PREFIX + pep503(url):
            raise ValueError(f"not a Python project miss: {url!r} / {key!r}")
    elif kind == "mirror":
        ref = mirror_paths.from_miss_key(key)
        if ref is None or ref.uri != url:
            raise ValueError(f"not a mirror path miss: {url[:200]!r} / {key[:200]!r}")
    else:
        raise ValueError(f"'kind' must be 'url', 'project' or 'mirror', got {kind!r}")
    first, last = _time(item, "first_seen"), _time(item, "last_seen")
    if count == 0:
        return None  # dismissed in advance there: nothing was requested
    if first > last or last > limit:
        raise ValueError("first_seen/last_seen out of order or in the future")
    ua = item.get("last_ua", "")
    if not isinstance(ua, str):
        raise ValueError("'last_ua' must be a string")
    return Row(src, key, url, kind, count, min(clients, count), first, last, _storable(ua[:MAX_UA]))


def _check_url(key: str, url: str) -> None:
    if len(url) > 64 * 1024:
        raise ValueError("'url' too long")
    try:
        normal = keys.normalize(url)
    except keys.NotCacheable as exc:
        raise ValueError(f"'url' {url[:200]!r}: {exc}") from None
    if normal != key or keys.has_credentials(url):
        raise ValueError(f"'key' is not the key of 'url' {url[:200]!r}")


def _int(item: dict[str, Any], name: str, default: int | None = None) -> int:
    value = item.get(name, default)
    if type(value) is not int or not 0 <= value < MAX_COUNT:
        raise ValueError(f"{name!r} must be a whole number >= 0")
    return value


def _time(item: dict[str, Any], name: str) -> float:
    value = item.get(name)
    try:
        if not isinstance(value, str) or len(value) > 40:
            raise ValueError
        t = datetime.fromisoformat(value)
        if t.tzinfo is None:
            raise ValueError
        return t.timestamp()
    except (ValueError, OverflowError):
        raise ValueError(f"{name!r} must be an ISO 8601 time with a zone") from None


def _storable(s: str) -> str:
    """Lone surrogates (from a JSON \\ud800) cannot be stored as UTF-8."""
    return s.encode("utf-8", "replace").decode("utf-8")


def read(path: str, source: str | None = None) -> list[Row]:
    """parse() a file, or standard input for '-'."""
    import sys

    where = "<stdin>" if path == "-" else path
    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_FILE + 1)
        else:
            with Path(path).open("rb") as f:
                data = f.read(MAX_FILE + 1)
    except OSError as exc:
        raise ImportProblems(where, [f"cannot read it ({exc.strerror or exc})"]) from None
    if len(data) > MAX_FILE:
        raise ImportProblems(where, [f"larger than {MAX_FILE >> 20} MiB"])
    return parse(data.decode("utf-8", "replace"), where, source)


def merge(conn: sqlite3.Connection, rows: list[Row], where: str = "import") -> Summary:
    """Add each row's growth since its last import, in one transaction."""
    own = instance_id(conn)
    if any(r.source == own for r in rows):
        raise ImportProblems(where, ["this data dir's own export: its misses are already here"])
    new = added = 0
    now = time.time()
    with store.transaction(conn):
        for r in rows:
            prev = conn.execute(
                "SELECT count, clients FROM miss_imports WHERE key = ? AND source = ?",
                (r.key, r.source),
            ).fetchone()
            grown = r.count - (prev[0] if prev else 0)
            if prev is not None and grown <= 0 and r.clients <= prev[1]:
                continue  # nothing new from this source
            grown = max(grown, 0)
            conn.execute(
                "INSERT INTO miss_imports (key, source, count, clients, imported_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (key, source) DO UPDATE SET "
                "count = max(count, excluded.count), clients = max(clients, excluded.clients), "
                "imported_at = excluded.imported_at",
                (r.key, r.source, r.count, r.clients, now),
            )
            seen = conn.execute("SELECT 1 FROM misses WHERE key = ?", (r.key,)).fetchone()
            new += seen is None
            added += grown
            conn.execute(
                store.ADD_MISS,
                (r.key, r.url, r.kind, grown, r.first_seen, r.last_seen, r.last_ua),
            )
            conn.execute(store.RECOUNT_CLIENTS, (r.key,))
    return Summary(len(rows), new, added, tuple(sorted({r.source for r in rows})))
