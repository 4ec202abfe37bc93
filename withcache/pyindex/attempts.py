"""The outcome of each attempt to take a project on demand, and when to try again.

One row per project in the `ondemand` table. An upstream 404 is remembered for an hour
(a negative cache: a typo asked a thousand times costs one upstream request an hour);
a failure (an upstream answering garbage, a 500, a timeout, a resolution that found
nothing to install) is retried after a backoff that doubles from a minute to an hour.
The report shows the failures.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from withcache import store

TAKEN, ABSENT, FAILED = "taken", "absent", "failed"
ABSENT_FOR = 3600.0  # seconds an upstream 404 is believed
FIRST_BACKOFF = 60.0
MAX_BACKOFF = 3600.0


@dataclass(frozen=True)
class Attempt:
    """The last attempt on one project."""

    project: str
    status: str  # taken | absent | failed
    detail: str
    attempts: int  # consecutive failures (0 once taken)
    at: float
    retry_at: float


def backoff(failures: int) -> float:
    """Seconds to wait after the n-th consecutive failure: 60, 120, 240 ... 3600."""
    return float(min(FIRST_BACKOFF * 2 ** max(0, failures - 1), MAX_BACKOFF))


def next_row(
    previous: Attempt | None, project: str, status: str, detail: str, now: float
) -> Attempt:
    """The row an attempt leaves behind (pure)."""
    if status == TAKEN:
        return Attempt(project, TAKEN, detail, 0, now, now)
    if status == ABSENT:
        return Attempt(project, ABSENT, detail, 0, now, now + ABSENT_FOR)
    failures = (previous.attempts if previous and previous.status == FAILED else 0) + 1
    return Attempt(project, FAILED, detail, failures, now, now + backoff(failures))


def get(conn: sqlite3.Connection, project: str) -> Attempt | None:
    row = conn.execute(
        "SELECT project, status, detail, attempts, at, retry_at FROM ondemand WHERE project = ?",
        (project,),
    ).fetchone()
    return None if row is None else Attempt(*row)


def put(conn: sqlite3.Connection, a: Attempt) -> None:
    with store.transaction(conn):
        conn.execute(
            "INSERT OR REPLACE INTO ondemand VALUES (?, ?, ?, ?, ?, ?)",
            (a.project, a.status, a.detail, a.attempts, a.at, a.retry_at),
        )


def record(conn: sqlite3.Connection, project: str, status: str, detail: str, now: float) -> Attempt:
    """Store the outcome of an attempt; return the row (with its retry time)."""
    row = next_row(get(conn, project), project, status, detail, now)
    put(conn, row)
    return row


def failures(conn: sqlite3.Connection, since: float = 0.0) -> list[Attempt]:
    """Projects whose last attempt failed, newest first (for the report)."""
    rows = conn.execute(
        "SELECT project, status, detail, attempts, at, retry_at FROM ondemand "
        "WHERE status = ? AND at > ? ORDER BY at DESC",
        (FAILED, since),
    )
    return [Attempt(*r) for r in rows]
