"""`watch --auto` for mirrors with `auto: true`: a path miss is fetched from the
mirror's sources, verified, and placed with its /m/ link, so the next request hits.

The same shape as withcache/autofill.py (a small bounded pool, failures retried only
after a while) and the same fetch as sync (sources in order, pins when the manifest
lists the path with some). Requests go only to the mirror's own source hosts, redirect
hops included; the path is one nginx accepted (withcache/mirrors/paths.py), so what a
source sees is its base URL + that path. Filled files are recorded with source 'auto'
until a manifest lists them (`withcache add --mirror`).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from urllib.parse import urlsplit

import requests

from withcache import budget, fetch, index, placement, store
from withcache.autofill import MAX_PENDING, RETRY_AFTER, AllowedHostsOnly
from withcache.layout import Layout
from withcache.mirrors import tree
from withcache.mirrors.config import Mirror, MirrorFile
from withcache.mirrors.paths import MirrorRef, from_miss_key
from withcache.mirrors.sources import Served, fetch_first, pins_text


def source_hosts(mirror: Mirror) -> frozenset[str]:
    """`host` and `host:port` of each source, as autofill.allowed() compares them."""
    out = set()
    for s in mirror.sources:
        parts = urlsplit(s)
        host = (parts.hostname or "").lower()
        out.add(host)
        if parts.port is not None:
            out.add(f"{host}:{parts.port}")
    return frozenset(out)


class MirrorFill:
    """A bounded pool filling mirror path misses; offer() never blocks the watcher."""

    def __init__(
        self,
        layout: Layout,
        mirrors: Sequence[Mirror],
        *,
        jobs: int = 2,
        policy: fetch.Policy | None = None,
        say: Callable[[str], None] = lambda _msg: None,
        limits: budget.Limits | None = None,
        listed: Callable[[], Collection[str]] = lambda: (),
    ) -> None:
        self.layout = layout
        self.mirrors = {m.name: m for m in mirrors if m.auto}
        self.limits = limits or budget.Limits()
        self.listed = listed
        # Not reviewed, like any auto-fill: the budget refuses it when evicting cannot
        # make room.
        self.policy = budget.policy_for(
            policy or fetch.Policy(attempts=2, backoff=0.5),
            self.limits,
            layout,
            listed,
            binds=True,
        )
        self.say = say
        self.partial = layout.partial / "auto-mirror"
        self._pool = ThreadPoolExecutor(max(1, jobs), thread_name_prefix="mirrorfill")
        self._lock = threading.Lock()
        self._pending: set[MirrorRef] = set()
        self._failed: dict[MirrorRef, float] = {}
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self.filled: list[MirrorRef] = []

    def offer(self, misses: Iterable[str]) -> int:
        """Queue the misses (`mirror:<name>/<path>` keys) of auto mirrors."""
        queued = 0
        now = time.monotonic()
        for key in misses:
            ref = from_miss_key(key)
            if ref is None or ref.name not in self.mirrors:
                continue
            with self._lock:
                if ref in self._pending or len(self._pending) >= MAX_PENDING:
                    continue
                if now - self._failed.get(ref, -RETRY_AFTER) < RETRY_AFTER:
                    continue
                self._pending.add(ref)
            fut = self._pool.submit(self._fill, self.mirrors[ref.name], ref)
            fut.add_done_callback(self._done_callback(ref))
            queued += 1
        return queued

    def close(self) -> None:
        """Drop what is queued, finish what is running (partials resume next time)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        for s in self._sessions:
            s.close()

    def _done_callback(self, ref: MirrorRef) -> Callable[[Future[None]], None]:
        def done(_fut: Future[None]) -> None:
            with self._lock:
                self._pending.discard(ref)

        return done

    def _session(self, mirror: Mirror) -> requests.Session:
        sessions: dict[str, requests.Session] = self._local.__dict__.setdefault("by_mirror", {})
        s = sessions.get(mirror.name)
        if s is None:
            s = fetch.new_session()
            guard = AllowedHostsOnly(source_hosts(mirror))
            s.mount("http://", guard)
            s.mount("https://", guard)
            sessions[mirror.name] = s
            with self._lock:
                self._sessions.append(s)
        return s

    def _fill(self, mirror: Mirror, ref: MirrorRef) -> None:
        f = next((x for x in mirror.files if x.ref == ref), None) or mirror.file_at(ref.path)
        conn = store.connect(self.layout.db)
        try:
            if tree.lookup(conn, ref) == f.key and tree.is_linked(self.layout, f.key, ref):
                return
            if self._link_held(conn, f):
                return
            try:
                result = self._fetch(mirror, f)
            except (fetch.FetchFailed, OSError) as exc:
                with self._lock:
                    self._failed[ref] = time.monotonic()
                self.say(f"auto-fill {ref.uri}: {exc}")
                return
            m = tree.Placement(ref, result.served_by, pins_text(f.pins.digests()))
            item = placement.Item(result, key=f.key, url=f.url, source="auto", mirror=m)
            placement.install(self.layout, conn, item)
            fetch.discard_partial(self.partial, f.key)
        finally:
            conn.close()
        for e in budget.enforce(self.layout, self.limits, self.listed()).evicted:
            self.say(f"evicted {e.url} ({e.size} bytes): over the store's budget")
        with self._lock:
            self.filled.append(ref)
            index.render(self.layout)
        self.say(f"auto-filled {ref.uri} from {result.served_by} ({result.size} bytes)")

    def _link_held(self, conn: sqlite3.Connection, f: MirrorFile) -> bool:
        """The file is in the store already (fetched through /b/): link it, fetch nothing."""
        if f.pins.digests():
            return False  # its bytes never passed these pins: fetch and check them
        rec = conn.execute("SELECT url, sha256 FROM artifacts WHERE key = ?", (f.key,)).fetchone()
        if rec is None or (f.pins.sha256 and rec[1] != f.pins.sha256):
            return False
        return placement.link_mirror(self.layout, conn, f.key, tree.Placement(f.ref, rec[0]))

    def _fetch(self, mirror: Mirror, f: MirrorFile) -> Served:
        self.partial.mkdir(parents=True, exist_ok=True)
        result = fetch_first(
            self._session(mirror),
            fetch.Request(url=f.url, key=f.key, sha256=f.pins.sha256),
            self.partial,
            self.policy,
            urls=f.urls,
            digests=f.pins.digests(),
        )
        assert result is not None  # no validators were sent: never a 304
        return result
