"""Helpers for the mirror tests: manifests, the DB rows, and the tree invariant."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from withcache import keys
from withcache.layout import Layout


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def b2_dir(name: str) -> str:
    """GLEP 75's directory for a distfile, computed independently of withcache."""
    return f"{hashlib.blake2b(name.encode()).digest()[0]:02x}"


def mirror_manifest(
    path: Path,
    name: str,
    sources: Sequence[str],
    files: Sequence[str],
    *,
    layout: str | None = None,
    auto: bool = False,
    fallthrough: bool = False,
) -> Path:
    """A manifest with one mirror; `files` are YAML list items, written as given."""
    lines = ["mirrors:", f"  {name}:", "    sources:"]
    lines += [f"      - {s}" for s in sources]
    if layout:
        lines.append(f"    layout: {layout}")
    lines.append(f"    auto: {'true' if auto else 'false'}")
    lines.append(f"    fallthrough: {'true' if fallthrough else 'false'}")
    if files:
        lines.append("    files:")
        for f in files:
            first, *rest = f.splitlines()
            lines.append(f"      - {first}")
            lines += [f"        {r}" for r in rest]
    else:
        lines.append("    files: []")
    path.write_text("\n".join(lines) + "\n")
    return path


def db(layout: Layout) -> sqlite3.Connection:
    conn = sqlite3.connect(layout.db, timeout=30)
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def _select(layout: Layout, sql: str) -> list[tuple[Any, ...]]:
    """Rows of a query; none when the DB or its table does not exist yet."""
    if not layout.db.exists():
        return []
    conn = db(layout)
    try:
        return list(conn.execute(sql))
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    finally:
        conn.close()


def rows(layout: Layout) -> dict[str, tuple[str, str, str]]:
    """mirror_files as {'<name>/<path>': (key, served_by, pins)}."""
    sql = "SELECT mirror, path, key, served_by, pins FROM mirror_files"
    return {f"{r[0]}/{r[1]}": (r[2], r[3], r[4]) for r in _select(layout, sql)}


def records(layout: Layout) -> dict[str, tuple[str, str, int]]:
    """artifacts as {key: (sha256, source, size)}."""
    sql = "SELECT key, sha256, source, size FROM artifacts"
    return {r[0]: (r[1], r[2], r[3]) for r in _select(layout, sql)}


def blob(layout: Layout, key: str) -> Path:
    return layout.www / keys.blob_relpath(key)


def link(layout: Layout, name: str, path: str) -> Path:
    return layout.www / "m" / name / path


def same_inode(a: Path, b: Path) -> bool:
    sa, sb = a.stat(), b.stat()
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def assert_mirror_tree_sound(layout: Layout) -> int:
    """The invariant, from the files up: every blob hashes to its record, and every file
    under www/m/ (but layout.conf) is a row's link whose bytes are its record's.
    Returns how many links there are."""
    recs = records(layout)
    for path in (layout.www / "b").rglob(keys.BLOB_FILE):
        key = keys.decode_token(str(path.parent.relative_to(layout.www / "b")).replace("/", ""))
        assert key in recs, f"{path} has no record"
        assert sha(path.read_bytes()) == recs[key][0], f"{path} differs from its record"
    by_path = rows(layout)
    n = 0
    top = layout.www / "m"
    for path in top.rglob("*") if top.exists() else []:
        if path.is_dir() or path.name == "layout.conf":
            continue
        rel = str(path.relative_to(top))
        assert rel in by_path, f"{path} is served under /m/ with no row"
        key = by_path[rel][0]
        assert key in recs, f"{path} is served for {key}, which has no record"
        assert sha(path.read_bytes()) == recs[key][0], f"{path} differs from its record"
        n += 1
    return n
