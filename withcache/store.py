"""The state database: what is in the tree, what failed, hits and misses.

Stdlib sqlite3 in WAL mode, so the watcher can write while `sync`, `misses` and
`report` read. Each part of withcache adds its tables to SCHEMA; `connect()`
creates whatever is missing.
"""

from __future__ import annotations

import contextlib
import operator
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS artifacts (
        key TEXT PRIMARY KEY,
        url TEXT NOT NULL,
        name TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        fetched_at REAL NOT NULL,
        etag TEXT,
        last_modified TEXT,
        source TEXT NOT NULL DEFAULT 'manifest',
        disposition TEXT,
        redirects INTEGER NOT NULL DEFAULT 0,
        final_url TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS sync_failures (
        key TEXT PRIMARY KEY,
        url TEXT NOT NULL,
        error TEXT NOT NULL,
        at REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS hits (
        key TEXT PRIMARY KEY,
        count INTEGER NOT NULL DEFAULT 0,
        bytes INTEGER NOT NULL DEFAULT 0,
        last_hit REAL
    )""",
    """CREATE TABLE IF NOT EXISTS misses (
        key TEXT PRIMARY KEY,
        url TEXT NOT NULL,
        kind TEXT NOT NULL DEFAULT 'url',
        count INTEGER NOT NULL DEFAULT 0,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        clients INTEGER NOT NULL DEFAULT 0,
        last_ua TEXT,
        dismissed INTEGER NOT NULL DEFAULT 0,
        reported INTEGER NOT NULL DEFAULT 0
    )""",
    # Distinct clients per miss: misses.clients is their count.
    """CREATE TABLE IF NOT EXISTS miss_clients (
        key TEXT NOT NULL,
        addr TEXT NOT NULL,
        PRIMARY KEY (key, addr)
    ) WITHOUT ROWID""",
    # Misses imported from other hosts (`withcache misses import`): the running totals
    # each source reported last, so a re-import adds only their growth.
    """CREATE TABLE IF NOT EXISTS miss_imports (
        key TEXT NOT NULL,
        source TEXT NOT NULL,
        count INTEGER NOT NULL,
        clients INTEGER NOT NULL,
        imported_at REAL NOT NULL,
        PRIMARY KEY (key, source)
    ) WITHOUT ROWID""",
    # This data dir's id as a source of misses (one row).
    """CREATE TABLE IF NOT EXISTS instance (
        one INTEGER PRIMARY KEY CHECK (one = 1),
        id TEXT NOT NULL
    )""",
    # Where the watcher is in each log; written in the transaction of the counts it covers.
    """CREATE TABLE IF NOT EXISTS log_offsets (
        log TEXT PRIMARY KEY,
        inode INTEGER NOT NULL,
        offset INTEGER NOT NULL,
        tail BLOB NOT NULL,
        updated REAL NOT NULL
    )""",
    # Running totals of what the watcher read (lines, hits, misses, invalid, garbage...).
    """CREATE TABLE IF NOT EXISTS counters (
        name TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    )""",
    # One row per `withcache report`: the totals it saw, so the next one shows the change.
    """CREATE TABLE IF NOT EXISTS reports (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        counters TEXT NOT NULL
    )""",
    # Mirror files (withcache/mirrors/tree.py): the artifact served at /m/<mirror>/<path>
    # through a hard link, the source URL its bytes came from, the pins they passed.
    """CREATE TABLE IF NOT EXISTS mirror_files (
        mirror TEXT NOT NULL,
        path TEXT NOT NULL,
        key TEXT NOT NULL,
        served_by TEXT NOT NULL,
        pins TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (mirror, path)
    )""",
    "CREATE INDEX IF NOT EXISTS mirror_files_key ON mirror_files (key)",
    # Artifacts the disk budget evicted (withcache/budget.py), for the report and metrics.
    """CREATE TABLE IF NOT EXISTS evictions (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL,
        url TEXT NOT NULL,
        size INTEGER NOT NULL,
        source TEXT NOT NULL,
        last_used REAL NOT NULL,
        at REAL NOT NULL,
        reason TEXT NOT NULL
    )""",
    # One row per `withcache sync` (withcache/history.py): metrics and the stale-sync alert.
    """CREATE TABLE IF NOT EXISTS sync_runs (
        id INTEGER PRIMARY KEY,
        started REAL NOT NULL,
        finished REAL NOT NULL,
        ok INTEGER NOT NULL,
        fetched INTEGER NOT NULL,
        failed INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        error TEXT
    )""",
    # Per-artifact hits at the last report (top artifacts since then).
    """CREATE TABLE IF NOT EXISTS report_hits (
        key TEXT PRIMARY KEY,
        count INTEGER NOT NULL,
        bytes INTEGER NOT NULL
    )""",
    # Python projects the watcher tried to take on demand: how it went, when to try again
    # (pyindex/attempts.py).
    """CREATE TABLE IF NOT EXISTS ondemand (
        project TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '',
        attempts INTEGER NOT NULL DEFAULT 0,
        at REAL NOT NULL,
        retry_at REAL NOT NULL
    )""",
    # Validators of upstream project pages, for conditional refreshes (pyindex/refresh.py).
    """CREATE TABLE IF NOT EXISTS upstream_pages (
        url TEXT PRIMARY KEY,
        etag TEXT,
        last_modified TEXT,
        digest TEXT,
        checked_at REAL NOT NULL
    )""",
    # The files of the private indexes (withcache/indexes/db.py reads and writes them).
    """CREATE TABLE IF NOT EXISTS index_files (
        index_name TEXT NOT NULL,
        filename TEXT NOT NULL,
        project TEXT NOT NULL,
        version TEXT NOT NULL,
        key TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        size INTEGER NOT NULL,
        requires_python TEXT,
        metadata_key TEXT,
        metadata_sha256 TEXT,
        yanked TEXT,
        uploaded_at REAL NOT NULL,
        uploader TEXT NOT NULL,
        PRIMARY KEY (index_name, filename)
    )""",
    "CREATE INDEX IF NOT EXISTS index_files_project ON index_files (index_name, project)",
    # Every upload, publish, yank and un-yank: who, when, from where, what.
    """CREATE TABLE IF NOT EXISTS index_audit (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        index_name TEXT NOT NULL,
        action TEXT NOT NULL,
        user TEXT NOT NULL,
        addr TEXT,
        filename TEXT NOT NULL,
        size INTEGER,
        sha256 TEXT,
        detail TEXT
    )""",
]


# Columns added to `artifacts` after its first release: an older DB gets them on connect.
ADDED_COLUMNS = {
    "disposition": "TEXT",
    "redirects": "INTEGER NOT NULL DEFAULT 0",
    "final_url": "TEXT",
}


@dataclass(frozen=True)
class Artifact:
    """One verified file in www/b/."""

    key: str
    url: str
    name: str
    size: int
    sha256: str
    fetched_at: float
    etag: str | None = None
    last_modified: str | None = None
    source: str = "manifest"
    disposition: str | None = None  # the origin's Content-Disposition (final response)
    redirects: int = 0  # redirects from `url` to the bytes
    final_url: str | None = None  # their target, query dropped ('?' when it had one)


ARTIFACT_COLUMNS = ", ".join(Artifact.__dataclass_fields__)
_ARTIFACT_ROW = operator.attrgetter(*Artifact.__dataclass_fields__)  # astuple() deep-copies


def connect(db: Path) -> sqlite3.Connection:
    """Open (creating if needed) the state DB in WAL mode.

    Shareable across threads: callers that do so serialise access with a lock.
    """
    db.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db, timeout=30, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    for statement in SCHEMA:
        conn.execute(statement)
    _add_columns(conn)
    return conn


def _add_columns(conn: sqlite3.Connection) -> None:
    """ALTER an `artifacts` table made before ADDED_COLUMNS (another process may be
    doing the same: a duplicate column is its work done)."""
    have = {r[1] for r in conn.execute("PRAGMA table_info(artifacts)")}
    for name, decl in ADDED_COLUMNS.items():
        if name not in have:
            try:
                conn.execute(f"ALTER TABLE artifacts ADD COLUMN {name} {decl}")
            except sqlite3.OperationalError as exc:
                if "duplicate column" not in str(exc):
                    raise


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception (a failed COMMIT too)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        # SQLite may have rolled back already (a full disk does): the original error
        # is the one to report, not "cannot rollback - no transaction is active".
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


def read_artifacts(db: Path) -> dict[str, Artifact]:
    """The artifact records, without creating or changing any file (`sync --dry-run`).

    No DB yet means no records. With no -wal file beside it the DB is fully
    checkpointed and is opened immutable (no -shm is created); otherwise another
    connection is active and a plain read-only connection sees its commits.
    """
    if not db.exists():
        return {}
    wal = db.with_name(db.name + "-wal").exists()
    uri = f"{db.resolve().as_uri()}?{'mode=ro' if wal else 'immutable=1'}"
    conn = sqlite3.connect(uri, uri=True, timeout=30)
    try:
        return artifacts(conn)
    except sqlite3.OperationalError as exc:  # an older DB without the table
        if "no such table" in str(exc):
            return {}
        raise
    finally:
        conn.close()


def artifacts(conn: sqlite3.Connection) -> dict[str, Artifact]:
    have = {r[1] for r in conn.execute("PRAGMA table_info(artifacts)")}
    if have.issuperset(ADDED_COLUMNS):
        rows = conn.execute(f"SELECT {ARTIFACT_COLUMNS} FROM artifacts")
        return {r[0]: Artifact(*r) for r in rows}
    # An older DB opened read-only (`sync --dry-run`): the added fields keep their defaults.
    first = [c for c in Artifact.__dataclass_fields__ if c not in ADDED_COLUMNS]
    rows = conn.execute(f"SELECT {', '.join(first)} FROM artifacts")
    return {r[0]: Artifact(*r) for r in rows}


def artifacts_with_origin_headers(conn: sqlite3.Connection) -> list[Artifact]:
    """The records whose origin sent a Content-Disposition or redirected (the few that
    need a location of their own in nginx), without reading the whole table."""
    rows = conn.execute(
        f"SELECT {ARTIFACT_COLUMNS} FROM artifacts WHERE disposition IS NOT NULL OR redirects != 0"
    )
    return [Artifact(*r) for r in rows]


def artifacts_with_keys(conn: sqlite3.Connection, keys: Sequence[str]) -> list[str]:
    """Which of `keys` have a record (without reading the whole table)."""
    return [r[0] for r in rows_where_in(conn, "SELECT key FROM artifacts", "key", keys)]


def rows_where_in(
    conn: sqlite3.Connection, select: str, column: str, values: Sequence[str]
) -> Iterator[Any]:
    """The rows of `select` (a statement with no WHERE) whose `column` is one of
    `values`: asked 500 at a time, under SQLite's limit on bound parameters."""
    for i in range(0, len(values), 500):
        chunk = values[i : i + 500]
        yield from conn.execute(f"{select} WHERE {column} IN ({','.join('?' * len(chunk))})", chunk)


def put_artifact(conn: sqlite3.Connection, a: Artifact) -> None:
    put_artifacts(conn, [a])


def put_artifacts(conn: sqlite3.Connection, batch: Sequence[Artifact]) -> None:
    """Record artifacts in one transaction (a failure recorded earlier is cleared)."""
    with transaction(conn):
        marks = ", ".join("?" * len(Artifact.__dataclass_fields__))
        conn.executemany(
            f"INSERT OR REPLACE INTO artifacts ({ARTIFACT_COLUMNS}) VALUES ({marks})",
            [_ARTIFACT_ROW(a) for a in batch],
        )
        conn.executemany("DELETE FROM sync_failures WHERE key = ?", [(a.key,) for a in batch])


def delete_artifact(conn: sqlite3.Connection, key: str) -> None:
    with transaction(conn):
        conn.execute("DELETE FROM artifacts WHERE key = ?", (key,))


def record_failure(conn: sqlite3.Connection, key: str, url: str, error: str) -> None:
    with transaction(conn):
        conn.execute(
            "INSERT OR REPLACE INTO sync_failures VALUES (?, ?, ?, ?)",
            (key, url, error, time.time()),
        )


def failures(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    return list(conn.execute("SELECT key, url, error, at FROM sync_failures ORDER BY at"))


# --- the watcher's part: hits, misses, log offsets, counters, reports ---------------------


@dataclass(frozen=True)
class Checkpoint:
    """A position in a log: inode and offset, plus the bytes just before the offset.

    The bytes tell our file from a newcomer that reuses the inode number, and find
    our file again after copytruncate made a copy of it.
    """

    inode: int
    offset: int
    tail: bytes = b""


# The watcher's running totals (the counters table), in the order reports show them.
COUNTERS = (
    "lines",
    "hits",
    "hit_bytes",
    "misses",
    "project_misses",
    "invalid",
    "garbage",
    "page_hits",
    "page_bytes",
    # the /m/ area's part of hits, hit_bytes and misses (metrics split the areas)
    "m_hits",
    "m_hit_bytes",
    "m_misses",
)


@dataclass(slots=True)
class HitTally:
    """One artifact's hits within a batch of log lines."""

    count: int
    bytes: int
    last: float


@dataclass(slots=True)
class MissTally:
    """One missed URL's (or project's) requests within a batch of log lines."""

    url: str  # as requested (credentials dropped), or the project name
    kind: str  # "url" | "project"
    count: int
    first: float
    last: float
    last_ua: str


@dataclass
class Traffic:
    """What one batch of log lines adds up to; applied in one transaction."""

    hits: dict[str, HitTally] = field(default_factory=dict)
    misses: dict[str, MissTally] = field(default_factory=dict)
    clients: set[tuple[str, str]] = field(default_factory=set)  # (key, addr)
    counters: dict[str, int] = field(default_factory=dict)


# A miss's distinct clients: those seen here, plus those each other host reported.
RECOUNT_CLIENTS = (
    "UPDATE misses SET clients = "
    "(SELECT count(*) FROM miss_clients WHERE miss_clients.key = misses.key) + "
    "(SELECT coalesce(sum(clients), 0) FROM miss_imports WHERE miss_imports.key = misses.key) "
    "WHERE key = ?"
)


# Add (key, url, kind, count, first_seen, last_seen, last_ua) to a miss's counts.
ADD_MISS = (
    "INSERT INTO misses (key, url, kind, count, first_seen, last_seen, last_ua) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (key) DO UPDATE SET count = count + excluded.count, "
    "first_seen = min(first_seen, excluded.first_seen), "
    "last_ua = CASE WHEN excluded.last_seen >= last_seen "
    "THEN excluded.last_ua ELSE last_ua END, "
    "last_seen = max(last_seen, excluded.last_seen)"
)


def checkpoint(conn: sqlite3.Connection, log: str) -> Checkpoint | None:
    row = conn.execute(
        "SELECT inode, offset, tail FROM log_offsets WHERE log = ?", (log,)
    ).fetchone()
    return None if row is None else Checkpoint(row[0], row[1], bytes(row[2]))


def record_traffic(conn: sqlite3.Connection, traffic: Traffic, log: str, at: Checkpoint) -> None:
    """Add a batch's counts and move the log's checkpoint, all or nothing."""
    with transaction(conn):
        if traffic.hits:
            conn.executemany(
                "INSERT INTO hits (key, count, bytes, last_hit) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET count = count + excluded.count, "
                "bytes = bytes + excluded.bytes, "
                "last_hit = max(coalesce(last_hit, 0), excluded.last_hit)",
                [(k, h.count, h.bytes, h.last) for k, h in traffic.hits.items()],
            )
        if traffic.misses:
            conn.executemany(
                ADD_MISS,
                [
                    (k, m.url, m.kind, m.count, m.first, m.last, m.last_ua)
                    for k, m in traffic.misses.items()
                ],
            )
            conn.executemany(  # sorted: B-tree inserts in key order touch far fewer pages
                "INSERT OR IGNORE INTO miss_clients (key, addr) VALUES (?, ?)",
                sorted(traffic.clients),
            )
            conn.executemany(RECOUNT_CLIENTS, [(k,) for k in traffic.misses])
        if traffic.counters:
            add_counters(conn, traffic.counters)
        conn.execute(
            "INSERT OR REPLACE INTO log_offsets (log, inode, offset, tail, updated) "
            "VALUES (?, ?, ?, ?, ?)",
            (log, at.inode, at.offset, at.tail, time.time()),
        )


def add_counters(conn: sqlite3.Connection, deltas: dict[str, int]) -> None:
    conn.executemany(
        "INSERT INTO counters (name, value) VALUES (?, ?) "
        "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
        [(k, v) for k, v in deltas.items() if v],
    )


def counters(conn: sqlite3.Connection) -> dict[str, int]:
    return {r[0]: r[1] for r in conn.execute("SELECT name, value FROM counters")}


def is_disk_full(exc: BaseException) -> bool:
    """SQLite's or the OS's way of saying the filesystem has no room."""
    return "database or disk is full" in str(exc) or getattr(exc, "errno", None) == 28
