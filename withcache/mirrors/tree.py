"""www/m/: each mirror file is a hard link to its blob, with a row saying so.

A hard link is the same inode as www/b/<token>/@data, so /m/<mirror>/<path> and the
shims' /b/ URL serve the very same bytes (same ETag, same Last-Modified), stored once.
nginx's `disable_symlinks on` refuses symlinks, and a hard link is not one. The link
holds the blob's bytes even after the blob's name is gone, so whoever removes or
replaces a blob unlinks its mirror links first: placement does, under its lock. The
rows (table mirror_files) say which links a key has, which source served it and
which pins besides sha256 its bytes passed.

New links are made under state/partial/ and renamed into place, so a crash leaves at
worst a stray link there, never a half-made name under www/.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from withcache import store, tree
from withcache.atomic import fsync_dir
from withcache.layout import Layout
from withcache.mirrors.paths import MirrorRef


@dataclass(frozen=True)
class Placement:
    """What placing a mirror file records besides the artifact."""

    ref: MirrorRef
    served_by: str
    pins: str = ""  # sources.pins_text of the pins besides sha256 the bytes passed


@dataclass(frozen=True)
class Row:
    """One row of mirror_files."""

    ref: MirrorRef
    key: str
    served_by: str
    pins: str


def link_path(layout: Layout, ref: MirrorRef) -> Path:
    return layout.www / ref.relpath


def record(conn: sqlite3.Connection, items: Sequence[tuple[str, Placement]]) -> None:
    """Rows for (key, placement) pairs, in one transaction."""
    if not items:
        return
    with store.transaction(conn):
        conn.executemany(
            "INSERT OR REPLACE INTO mirror_files (mirror, path, key, served_by, pins) "
            "VALUES (?, ?, ?, ?, ?)",
            [(p.ref.name, p.ref.path, key, p.served_by, p.pins) for key, p in items],
        )


def forget(conn: sqlite3.Connection, key: str) -> None:
    with store.transaction(conn):
        conn.execute("DELETE FROM mirror_files WHERE key = ?", (key,))


def forget_ref(conn: sqlite3.Connection, ref: MirrorRef) -> None:
    with store.transaction(conn):
        conn.execute("DELETE FROM mirror_files WHERE mirror = ? AND path = ?", (ref.name, ref.path))


def rows(conn: sqlite3.Connection, key: str | None = None) -> list[Row]:
    sql = "SELECT mirror, path, key, served_by, pins FROM mirror_files"
    cur = conn.execute(sql + " WHERE key = ?", (key,)) if key else conn.execute(sql)
    return [Row(MirrorRef(r[0], r[1]), r[2], r[3], r[4]) for r in cur]


def lookup(conn: sqlite3.Connection, ref: MirrorRef) -> str | None:
    """The key served at a mirror path, if any."""
    row = conn.execute(
        "SELECT key FROM mirror_files WHERE mirror = ? AND path = ?", (ref.name, ref.path)
    ).fetchone()
    return None if row is None else str(row[0])


def link(layout: Layout, key: str, ref: MirrorRef, *, durable: bool = True) -> Path:
    """Make www/m/<name>/<path> a hard link to the key's blob (atomically replacing
    whatever was there). With durable=False the caller makes the rename durable itself
    (placement's groups: one syncfs)."""
    dest = link_path(layout, ref)
    tree.make_dirs(layout.www, dest.parent)
    tmp = layout.partial / (hashlib.sha256(ref.relpath.encode()).hexdigest()[:40] + ".link")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.link(tree.blob_path(layout, key), tmp)
    try:
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    if durable:
        fsync_dir(dest.parent)
    return dest


def unlink(layout: Layout, refs: Iterable[MirrorRef]) -> None:
    """Remove these links (and the directories they leave empty, up to www/m/)."""
    top = layout.www / "m"
    for ref in refs:
        path = link_path(layout, ref)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            continue
        tree.remove_empty_dirs(path.parent, top)


def unlink_key(layout: Layout, conn: sqlite3.Connection, key: str) -> None:
    """Remove every link to a key's blob (before the blob goes: a link keeps its bytes).
    Rows left behind are dropped by the next sync's publish()."""
    unlink(layout, [r.ref for r in rows(conn, key)])


def is_linked(layout: Layout, key: str, ref: MirrorRef) -> bool:
    """Does www/m/<name>/<path> exist as the very inode of the key's blob?"""
    try:
        a = link_path(layout, ref).stat()
        b = tree.blob_path(layout, key).stat()
    except (FileNotFoundError, NotADirectoryError):
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def read_rows(db: Path) -> list[Row]:
    """rows() without creating or changing any file (the plan of `sync --dry-run`): the
    same read-only opening as store.read_artifacts."""
    if not db.exists():
        return []
    wal = db.with_name(db.name + "-wal").exists()
    uri = f"{db.resolve().as_uri()}?{'mode=ro' if wal else 'immutable=1'}"
    conn = sqlite3.connect(uri, uri=True, timeout=30)
    try:
        return rows(conn)
    except sqlite3.OperationalError as exc:  # a DB from before mirrors
        if "no such table" in str(exc):
            return []
        raise
    finally:
        conn.close()
