"""The private indexes' rows in the state DB: their files and the audit trail.

A file's row is written after its bytes were placed (placement records the artifact
and renames the blob first), so a row always names bytes that are in www/b/. The
audit row goes in the same transaction as the change it describes.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from withcache import store


@dataclass(frozen=True)
class IndexedFile:
    """One file of one index."""

    index: str
    filename: str
    project: str
    version: str
    key: str
    sha256: str
    size: int
    requires_python: str | None
    metadata_key: str | None
    metadata_sha256: str | None
    yanked: str | None  # None: not yanked; "": yanked without a reason; else the reason
    uploaded_at: float
    uploader: str


@dataclass(frozen=True)
class Event:
    """One audit record: who did what to which file, when and from where."""

    at: float
    index: str
    action: str  # upload | publish | yank | unyank
    user: str
    addr: str | None
    filename: str
    size: int | None
    sha256: str | None
    detail: str | None = None


_FILE_COLUMNS = (
    "index_name, filename, project, version, key, sha256, size, requires_python, "
    "metadata_key, metadata_sha256, yanked, uploaded_at, uploader"
)
_EVENT_COLUMNS = "at, index_name, action, user, addr, filename, size, sha256, detail"


def file(conn: sqlite3.Connection, index: str, filename: str) -> IndexedFile | None:
    row = conn.execute(
        f"SELECT {_FILE_COLUMNS} FROM index_files WHERE index_name = ? AND filename = ?",
        (index, filename),
    ).fetchone()
    return IndexedFile(*row) if row else None


def files(conn: sqlite3.Connection, index: str, project: str | None = None) -> list[IndexedFile]:
    if project is None:
        rows = conn.execute(
            f"SELECT {_FILE_COLUMNS} FROM index_files WHERE index_name = ?", (index,)
        )
    else:
        rows = conn.execute(
            f"SELECT {_FILE_COLUMNS} FROM index_files WHERE index_name = ? AND project = ?",
            (index, project),
        )
    return [IndexedFile(*r) for r in rows]


def projects(conn: sqlite3.Connection, index: str) -> list[str]:
    rows = conn.execute(
        "SELECT DISTINCT project FROM index_files WHERE index_name = ? ORDER BY project", (index,)
    )
    return [r[0] for r in rows]


def add(conn: sqlite3.Connection, f: IndexedFile, event: Event) -> None:
    """The file's row and its audit record, together."""
    with store.transaction(conn):
        conn.execute(
            f"INSERT INTO index_files ({_FILE_COLUMNS}) VALUES ({', '.join('?' * 13)})",
            (
                f.index,
                f.filename,
                f.project,
                f.version,
                f.key,
                f.sha256,
                f.size,
                f.requires_python,
                f.metadata_key,
                f.metadata_sha256,
                f.yanked,
                f.uploaded_at,
                f.uploader,
            ),
        )
        _audit(conn, event)


def audit(conn: sqlite3.Connection, event: Event) -> None:
    with store.transaction(conn):
        _audit(conn, event)


def set_yanked(
    conn: sqlite3.Connection, index: str, filenames: list[str], yanked: str | None, event: Event
) -> None:
    """Yank (a reason, possibly "") or un-yank (None) files, with one audit record each."""
    with store.transaction(conn):
        conn.executemany(
            "UPDATE index_files SET yanked = ? WHERE index_name = ? AND filename = ?",
            [(yanked, index, name) for name in filenames],
        )
        for name in filenames:
            _audit(conn, Event(**{**event.__dict__, "filename": name}))


def events(
    conn: sqlite3.Connection, since: float | None = None, limit: int | None = None
) -> list[Event]:
    """Audit records, newest first."""
    sql = f"SELECT {_EVENT_COLUMNS} FROM index_audit WHERE at > ? ORDER BY at DESC, id DESC"
    args: tuple[float | int, ...] = (since or 0.0,)
    if limit is not None:
        sql += " LIMIT ?"
        args += (limit,)
    return [Event(*r) for r in conn.execute(sql, args)]


def _audit(conn: sqlite3.Connection, e: Event) -> None:
    conn.execute(
        f"INSERT INTO index_audit ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (e.at, e.index, e.action, e.user, e.addr, e.filename, e.size, e.sha256, e.detail),
    )


def now() -> float:
    return time.time()
