"""What each `withcache sync` came to: the metrics' last-sync figures and the
"sync failing or stale" alert read it. A few hundred rows are kept."""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass

from withcache import store
from withcache.layout import Layout

KEEP = 500


@dataclass(frozen=True)
class Run:
    """One sync: when, how long, whether every download succeeded."""

    started: float
    finished: float
    ok: bool
    fetched: int = 0
    failed: int = 0
    bytes: int = 0
    error: str | None = None  # why a sync stopped before its downloads settled

    @property
    def seconds(self) -> float:
        return self.finished - self.started


def record(layout: Layout, run: Run) -> None:
    """Add a run (and forget all but the latest KEEP)."""
    with contextlib.closing(store.connect(layout.db)) as conn, store.transaction(conn):
        conn.execute(
            "INSERT INTO sync_runs (started, finished, ok, fetched, failed, bytes, error) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (run.started, run.finished, int(run.ok), run.fetched, run.failed, run.bytes, run.error),
        )
        conn.execute(
            "DELETE FROM sync_runs WHERE id <= (SELECT max(id) FROM sync_runs) - ?", (KEEP,)
        )


_COLUMNS = "started, finished, ok, fetched, failed, bytes, error"


def last(conn: sqlite3.Connection, *, ok: bool | None = None) -> Run | None:
    """The latest run (the latest successful one with ok=True)."""
    where = "" if ok is None else f"WHERE ok = {int(ok)} "
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM sync_runs {where}ORDER BY id DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    started, finished, good, fetched, failed, nbytes, error = row
    return Run(started, finished, bool(good), fetched, failed, nbytes, error)
