"""What every background fill shares: a small bounded pool the watcher offers misses to.

offer() never blocks the watcher; a miss already waiting is not queued twice; at most
MAX_PENDING wait (more are offered again on their next request); one that failed is
not tried again for RETRY_AFTER. Fills fetch through sessions that refuse every host
they were not given, redirect hops included, and they obey the disk budget: nothing
here is reviewed, so the budget refuses a fill when evicting cannot make room.
Subclasses say which misses they take (accept) and how one is filled (fill).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Hashable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

from withcache import budget, fetch, index, nginx, transport
from withcache.layout import Layout

MAX_PENDING = 256  # more waiting misses than this are offered again on their next request
RETRY_AFTER = 600.0  # seconds before a failed miss is tried again

T = TypeVar("T", bound=Hashable)


class FillPool(Generic[T]):
    """A bounded pool of fills of items of type T (a URL key, a mirror path...)."""

    def __init__(
        self,
        layout: Layout,
        *,
        name: str,
        jobs: int = 2,
        policy: fetch.Policy | None = None,
        say: Callable[[str], None] = lambda _msg: None,
        limits: budget.Limits | None = None,
        listed: Callable[[], Collection[str]] = lambda: (),
    ) -> None:
        self.layout = layout
        self.limits = limits or budget.Limits()
        self.listed = listed
        self.policy = budget.policy_for(
            policy or fetch.Policy(attempts=2, backoff=0.5),
            self.limits,
            layout,
            listed,
            binds=True,
        )
        self.say = say
        self.partial = layout.partial / name  # never shares a partial file with sync
        self._pool = ThreadPoolExecutor(max(1, jobs), thread_name_prefix=name)
        self._lock = threading.Lock()
        self._pending: set[T] = set()
        self._failed: dict[T, float] = {}
        self._sessions = transport.Clients()
        self.filled: list[T] = []

    # --- what a subclass says ---------------------------------------------------------

    def accept(self, miss_key: str) -> T | None:
        """The item this miss asks for, or None when this pool does not fill it."""
        raise NotImplementedError

    def fill(self, item: T) -> bool:
        """Fetch and place one item; True when something was placed. Raise
        fetch.FetchFailed or OSError when it failed (it is then retried later)."""
        raise NotImplementedError

    def describe(self, item: T) -> str:
        """How messages name an item."""
        return str(item)

    # --- the pool -----------------------------------------------------------------------

    def offer(self, misses: Iterable[str]) -> int:
        """Queue what this pool fills among these misses; return how many were queued."""
        queued = 0
        now = time.monotonic()
        for key in misses:
            item = self.accept(key)
            if item is None:
                continue
            with self._lock:
                if item in self._pending or len(self._pending) >= MAX_PENDING:
                    continue
                if now - self._failed.get(item, -RETRY_AFTER) < RETRY_AFTER:
                    continue
                self._pending.add(item)
            fut = self._pool.submit(self._run, item)
            fut.add_done_callback(self._done_callback(item))
            queued += 1
        return queued

    def close(self) -> None:
        """Drop what is queued, finish what is running (partials resume next time)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._sessions.close()

    def session(self, hosts: frozenset[str]) -> transport.Client:
        """This thread's client that talks to `hosts` and nothing else."""
        return self._sessions.get(
            lambda: transport.Client(hosts, why="host not in auto.allow_hosts"), hosts
        )

    def _run(self, item: T) -> None:
        self.partial.mkdir(parents=True, exist_ok=True)
        try:
            placed = self.fill(item)
        except (fetch.FetchFailed, OSError) as exc:
            with self._lock:
                self._failed[item] = time.monotonic()
            self.say(f"auto-fill {self.describe(item)}: {exc}")
            return
        if not placed:
            return
        for e in budget.enforce(self.layout, self.limits, self.listed()).evicted:
            self.say(f"evicted {e.url} ({e.size} bytes): over the store's budget")
        with self._lock:
            self.filled.append(item)
            index.render(self.layout)
            warning = nginx.refresh_artifact_headers(self.layout)  # its Content-Disposition
        if warning:
            self.say(f"auto-fill {self.describe(item)}: {warning}")

    def _done_callback(self, item: T) -> Callable[[Future[None]], None]:
        def done(_fut: Future[None]) -> None:
            with self._lock:
                self._pending.discard(item)

        return done
