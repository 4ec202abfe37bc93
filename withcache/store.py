"""The state database: what is in the tree, what failed, hits and misses.

Stdlib sqlite3 in WAL mode, so the watcher can write while `sync`, `misses` and
`report` read. Each part of withcache adds its tables to SCHEMA; `connect()`
creates whatever is missing.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

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
        source TEXT NOT NULL DEFAULT 'manifest'
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
        dismissed INTEGER NOT NULL DEFAULT 0
    )""",
]


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
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def artifacts(conn: sqlite3.Connection) -> dict[str, Artifact]:
    rows = conn.execute(
        "SELECT key, url, name, size, sha256, fetched_at, etag, last_modified, source "
        "FROM artifacts"
    )
    return {r["key"]: Artifact(*r) for r in rows}


def put_artifact(conn: sqlite3.Connection, a: Artifact) -> None:
    with transaction(conn):
        conn.execute(
            "INSERT OR REPLACE INTO artifacts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                a.key,
                a.url,
                a.name,
                a.size,
                a.sha256,
                a.fetched_at,
                a.etag,
                a.last_modified,
                a.source,
            ),
        )
        conn.execute("DELETE FROM sync_failures WHERE key = ?", (a.key,))


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
