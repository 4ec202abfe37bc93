"""`watch --auto` for mirrors with `auto: true`: a path miss is fetched from the
mirror's sources, verified, and placed with its /m/ link, so the next request hits.

The same pool as withcache/autofill.py (withcache/fillpool.py: bounded, failures
retried only after a while) and the same fetch as sync (sources in order, pins when the manifest
lists the path with some). Requests go only to the mirror's own source hosts, redirect
hops included; the path is one nginx accepted (withcache/mirrors/paths.py), so what a
source sees is its base URL + that path. Filled files are recorded with source 'auto'
until a manifest lists them (`withcache add --mirror`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from withcache import fetch, placement, store
from withcache.fillpool import FillPool
from withcache.layout import Layout
from withcache.mirrors import tree
from withcache.mirrors.config import Mirror, MirrorFile
from withcache.mirrors.paths import MirrorRef, from_miss_key
from withcache.mirrors.sources import Served, fetch_first, pins_text


def source_hosts(mirror: Mirror) -> frozenset[str]:
    """`host` and `host:port` of each source, as transport.allowed() compares them."""
    out = set()
    for s in mirror.sources:
        parts = urlsplit(s)
        host = (parts.hostname or "").lower()
        out.add(host)
        if parts.port is not None:
            out.add(f"{host}:{parts.port}")
    return frozenset(out)


class MirrorFill(FillPool[MirrorRef]):
    """Fills mirror path misses of mirrors with `auto: true`; offer() never blocks."""

    def __init__(self, layout: Layout, mirrors: Sequence[Mirror], **kw: Any) -> None:
        super().__init__(layout, name="auto-mirror", **kw)
        self.mirrors = {m.name: m for m in mirrors if m.auto}

    def accept(self, miss_key: str) -> MirrorRef | None:
        """The `mirror:<name>/<path>` misses of auto mirrors."""
        ref = from_miss_key(miss_key)
        return ref if ref is not None and ref.name in self.mirrors else None

    def describe(self, ref: MirrorRef) -> str:
        return ref.uri

    def fill(self, ref: MirrorRef) -> bool:
        mirror = self.mirrors[ref.name]
        f = next((x for x in mirror.files if x.ref == ref), None) or mirror.file_at(ref.path)
        conn = store.connect(self.layout.db)
        try:
            if tree.lookup(conn, ref) == f.key and tree.is_linked(self.layout, f.key, ref):
                return False
            if self._link_held(conn, f):
                return False
            result = self._fetch(mirror, f)
            m = tree.Placement(ref, result.served_by, pins_text(f.pins.digests()))
            item = placement.Item(result, key=f.key, url=f.url, source="auto", mirror=m)
            placement.install(self.layout, conn, item)
            fetch.discard_partial(self.partial, f.key)
        finally:
            conn.close()
        self.say(f"auto-filled {ref.uri} from {result.served_by} ({result.size} bytes)")
        return True

    def _link_held(self, conn: sqlite3.Connection, f: MirrorFile) -> bool:
        """The file is in the store already (fetched through /b/): link it, fetch nothing."""
        if f.pins.digests():
            return False  # its bytes never passed these pins: fetch and check them
        rec = conn.execute("SELECT url, sha256 FROM artifacts WHERE key = ?", (f.key,)).fetchone()
        if rec is None or (f.pins.sha256 and rec[1] != f.pins.sha256):
            return False
        return placement.link_mirror(self.layout, conn, f.key, tree.Placement(f.ref, rec[0]))

    def _fetch(self, mirror: Mirror, f: MirrorFile) -> Served:
        result = fetch_first(
            self.session(source_hosts(mirror)),
            fetch.Request(url=f.url, key=f.key, sha256=f.pins.sha256),
            self.partial,
            self.policy,
            urls=f.urls,
            digests=f.pins.digests(),
        )
        assert result is not None  # no validators were sent: never a 304
        return result
