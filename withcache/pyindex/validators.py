"""What an upstream said last time about each project page: its validators and a digest.

A refresh sends them back (If-None-Match / If-Modified-Since), so an unchanged page
costs a 304 and nothing else; the digest catches an upstream that sends no validators
but the same bytes. Kept in the `upstream_pages` table, keyed by the page's URL.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from dataclasses import dataclass

from withcache import store
from withcache.pyindex.pages import Page


@dataclass(frozen=True)
class Known:
    """The validators and body digest of the last 200 a page answered."""

    url: str
    etag: str | None
    last_modified: str | None
    digest: str | None


def digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def load(conn: sqlite3.Connection, urls: list[str]) -> dict[str, Known]:
    select = "SELECT url, etag, last_modified, digest FROM upstream_pages"
    return {r[0]: Known(*r) for r in store.rows_where_in(conn, select, "url", urls)}


def remember(conn: sqlite3.Connection, pages: list[tuple[str, Page]]) -> None:
    """Store what these answers said (url as requested, answer); a 304 keeps the digest."""
    now = time.time()
    with store.transaction(conn):
        for url, page in pages:
            if page.status == 200:
                conn.execute(
                    "INSERT OR REPLACE INTO upstream_pages VALUES (?, ?, ?, ?, ?)",
                    (url, page.etag, page.last_modified, digest(page.body), now),
                )
            elif page.status == 304:
                conn.execute(
                    "UPDATE upstream_pages SET checked_at = ?, etag = coalesce(?, etag) "
                    "WHERE url = ?",
                    (now, page.etag, url),
                )
