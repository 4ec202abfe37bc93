"""`watch --auto`: fetch a missed URL into the tree when its host is allowed.

Off unless asked for, and limited to the hosts in a manifest's `auto.allow_hosts`
(also for every redirect hop: the session refuses to connect anywhere else). The
fetch is sync's own (resumable, verified, record-then-rename) with a small fixed
pool of workers, so a burst of misses cannot start a burst of downloads. Fetched
artifacts are recorded with source 'auto', which the index and the report flag as
"auto-filled, not yet in a manifest" until someone commits them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from withcache import budget, fetch, index, placement, store
from withcache.layout import Layout

MAX_PENDING = 256  # more waiting misses than this are offered again on their next request
RETRY_AFTER = 600.0  # seconds before a failed URL is tried again


def allowed(url: str, hosts: frozenset[str]) -> bool:
    """Is the URL's host (or host:port) in allow_hosts? Case-insensitive, exact."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:
        return False
    return host in hosts or (port is not None and f"{host}:{port}" in hosts)


class AllowedHostsOnly(HTTPAdapter):
    """Refuses to send a request (a redirect hop included) to a host not allowed."""

    def __init__(self, hosts: frozenset[str]) -> None:
        super().__init__()
        self.hosts = hosts

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        if not allowed(request.url or "", self.hosts):
            raise requests.exceptions.InvalidURL(
                f"{request.url}: host not in auto.allow_hosts; not fetched"
            )
        return super().send(request, *args, **kwargs)


class AutoFill:
    """A bounded pool fetching allowed misses; offer() never blocks the watcher."""

    def __init__(
        self,
        layout: Layout,
        allow_hosts: Iterable[str],
        *,
        jobs: int = 2,
        policy: fetch.Policy | None = None,
        say: Callable[[str], None] = lambda _msg: None,
        limits: budget.Limits | None = None,
        listed: Callable[[], Collection[str]] = lambda: (),
    ) -> None:
        self.layout = layout
        self.hosts = frozenset(h.lower() for h in allow_hosts)
        self.limits = limits or budget.Limits()
        self.listed = listed
        # An auto-fill is not reviewed: the budget refuses it when evicting cannot make room.
        self.policy = budget.policy_for(
            policy or fetch.Policy(attempts=2, backoff=0.5),
            self.limits,
            layout,
            listed,
            binds=True,
        )
        self.say = say
        self.partial: Path = layout.partial / "auto"  # never shares a partial file with sync
        self._pool = ThreadPoolExecutor(max(1, jobs), thread_name_prefix="autofill")
        self._lock = threading.Lock()
        self._pending: set[str] = set()
        self._failed: dict[str, float] = {}
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self.fetched: list[str] = []

    def offer(self, misses: Iterable[str]) -> int:
        """Queue the allowed keys among these misses; return how many were queued."""
        queued = 0
        now = time.monotonic()
        for key in misses:
            if not self.hosts or not allowed(key, self.hosts):
                continue
            with self._lock:
                if key in self._pending or len(self._pending) >= MAX_PENDING:
                    continue
                if now - self._failed.get(key, -RETRY_AFTER) < RETRY_AFTER:
                    continue
                self._pending.add(key)
            fut = self._pool.submit(self._fill, key)
            fut.add_done_callback(self._done_callback(key))
            queued += 1
        return queued

    def close(self) -> None:
        """Drop what is queued, finish what is running (partials resume next time)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        for s in self._sessions:
            s.close()

    def _done_callback(self, key: str) -> Callable[[Future[None]], None]:
        def done(_fut: Future[None]) -> None:
            with self._lock:
                self._pending.discard(key)

        return done

    def _session(self) -> requests.Session:
        s: requests.Session | None = getattr(self._local, "session", None)
        if s is None:
            s = fetch.new_session()
            guard = AllowedHostsOnly(self.hosts)
            s.mount("http://", guard)
            s.mount("https://", guard)
            self._local.session = s
            with self._lock:
                self._sessions.append(s)
        return s

    def _fill(self, key: str) -> None:
        conn = store.connect(self.layout.db)
        try:
            if conn.execute("SELECT 1 FROM artifacts WHERE key = ?", (key,)).fetchone():
                return
            self.partial.mkdir(parents=True, exist_ok=True)
            try:
                result = fetch.fetch(
                    self._session(), fetch.Request(url=key, key=key), self.partial, self.policy
                )
            except (fetch.FetchFailed, OSError) as exc:
                with self._lock:
                    self._failed[key] = time.monotonic()
                self.say(f"auto-fill {key}: {exc}")
                return
            assert result is not None  # no validators were sent: never a 304
            item = placement.Item(result, key=key, url=key, source="auto")
            placement.install(self.layout, conn, item)
            fetch.discard_partial(self.partial, key)
        finally:
            conn.close()
        for e in budget.enforce(self.layout, self.limits, self.listed()).evicted:
            self.say(f"evicted {e.url} ({e.size} bytes): over the store's budget")
        with self._lock:
            self.fetched.append(key)
            index.render(self.layout)
        self.say(f"auto-filled {key} ({result.size} bytes)")
