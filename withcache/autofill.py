"""`watch --auto`: fetch a missed URL into the tree when its host is allowed.

Off unless asked for, and limited to the hosts in a manifest's `auto.allow_hosts`
(also for every redirect hop: the session refuses to connect anywhere else). The
fetch is sync's own (resumable, verified, record-then-rename) with a small fixed pool
of workers (withcache/fillpool.py), so a burst of misses cannot start a burst of
downloads. Fetched artifacts are recorded with source 'auto', which the index and the
report flag as "auto-filled, not yet in a manifest" until someone commits them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from withcache import fetch, placement, store
from withcache.fillpool import FillPool
from withcache.layout import Layout
from withcache.transport import allowed


class AutoFill(FillPool[str]):
    """Fetches missed URLs whose host is allowed; offer() never blocks the watcher."""

    def __init__(self, layout: Layout, allow_hosts: Iterable[str], **kw: Any) -> None:
        super().__init__(layout, name="auto", **kw)
        self.hosts = frozenset(h.lower() for h in allow_hosts)

    @property
    def fetched(self) -> list[str]:
        return self.filled

    def accept(self, miss_key: str) -> str | None:
        return miss_key if self.hosts and allowed(miss_key, self.hosts) else None

    def fill(self, key: str) -> bool:
        conn = store.connect(self.layout.db)
        try:
            if conn.execute("SELECT 1 FROM artifacts WHERE key = ?", (key,)).fetchone():
                return False
            result = fetch.fetch(
                self.session(self.hosts), fetch.Request(url=key, key=key), self.partial, self.policy
            )
            assert result is not None  # no validators were sent: never a 304
            placement.install(
                self.layout, conn, placement.Item(result, key=key, url=key, source="auto")
            )
            fetch.discard_partial(self.partial, key)
        finally:
            conn.close()
        self.say(f"auto-filled {key} ({result.size} bytes)")
        return True
