"""Put a verified download into the served tree: the one place that does it.

Order matters for "www/ never holds a file whose sha256 differs from its record":
old bytes go first (a refresh), then the record, then the atomic rename. A
cross-process lock keeps sync and the watcher's auto-fill from interleaving
those steps for the same key.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from withcache import lock, store, tree
from withcache.settings import Layout


def install(
    layout: Layout,
    conn: sqlite3.Connection,
    record: store.Artifact,
    partial: Path,
    mtime: float | None,
    *,
    replacing: bool = False,
) -> Path:
    """Record `record` and rename `partial` (complete, fsynced, verified) into www/b/."""
    with lock.hold(layout.state / "place.lock", "placement lock busy", wait=True):
        if replacing:
            tree.remove(layout, record.key)
        store.put_artifact(conn, record)
        return tree.place(layout, partial, record.key, mtime)
