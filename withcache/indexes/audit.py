"""The audit trail as the report, the index page and the catalog show it.

`withcache report` (text, markdown, JSON: the operator's mail) shows every index.
Pages nginx serves to anyone (index.html, catalog.json, report.html) show only the
indexes anyone may read: a restricted index's file names would tell an outsider its
private project names (the names a dependency-confusion attack needs).
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass
from typing import Any

from withcache.fmt import iso
from withcache.indexes import db, model
from withcache.layout import Layout


@dataclass(frozen=True)
class Row:
    """One audit record, ready to show."""

    at: float
    index: str
    action: str
    user: str
    addr: str | None
    filename: str
    size: int | None
    sha256: str | None
    detail: str | None

    def as_json(self) -> dict[str, Any]:
        return dict(asdict(self), at=iso(self.at))


def index_of_key(key: str) -> str | None:
    """The index an uploaded file's key names (see model.Index.key), or None."""
    if not key.startswith(model.HOST):
        return None
    return key[len(model.HOST) :].split("/", 1)[0].rstrip("~") or None


def rows(
    conn: sqlite3.Connection,
    layout: Layout,
    *,
    public: bool,
    since: float | None = None,
    limit: int | None = None,
) -> list[Row]:
    """Audit records, newest first; `public` keeps only indexes anyone may read."""
    try:
        events = db.events(conn, since, limit)
    except sqlite3.OperationalError:  # a DB from before the indexes
        return []
    if public:
        indexes = model.load(layout)
        events = [e for e in events if e.index in indexes and indexes[e.index].open]
    return [Row(**e.__dict__) for e in events]


def file_href(ix: model.Index, key: str, name: str) -> str:
    """Where an index file (or a wheel's metadata, kept as its own blob) is served."""
    suffix = ".metadata"
    if key.endswith(suffix) and name.endswith(suffix):  # nginx serves it beside the wheel
        return ix.href(key.removesuffix(suffix), name.removesuffix(suffix)) + suffix
    return ix.href(key, name)


def public_href(layout: Layout) -> dict[str, model.Index]:
    """The indexes whose files a public page may link (anyone reads them)."""
    return {name: ix for name, ix in model.load(layout).items() if ix.open}
