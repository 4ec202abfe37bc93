"""The watcher's worker for Python projects taken on demand (`python.on_demand`).

The watcher hands over the projects that got a 404 under /simple/<project>/; offer()
only checks the name, the globs and a bounded queue, so the log-following loop never
waits for the upstream. One worker thread takes the projects one at a time
(pyindex/take.py) and, every `python.refresh`, revalidates them (pyindex/refresh.py).

What a flood of bad names (typos, scanners) cannot do, in order of the checks:
  - a refused name (`..`, `%2f`, too long) or one outside every on_demand glob never
    leaves offer();
  - a full queue drops the name (its next request offers it again);
  - a project the index already serves, or that failed or was absent upstream a short
    while ago (attempts.py: a negative cache and a backoff), costs no request;
  - at most `per_minute` projects a minute reach the upstream; the rest are dropped.
Each of these is counted (counters ondemand_refused, _outside, _queue_full, _backoff,
_over_rate; and _taken, _absent, _failed, _refreshes), shown by the report. Memory stays
bounded: the queue, the set of queued names and the last minute's attempts.
"""

from __future__ import annotations

import collections
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence

from withcache import index, store
from withcache.errors import WithcacheError
from withcache.layout import Layout
from withcache.pyindex import attempts, names, take
from withcache.pyindex.config import PythonConfig

QUEUE = 256  # projects waiting; more are dropped (and offered again on their next request)
PER_MINUTE = 30  # upstream attempts a minute, at most
INDEX_EVERY = 60.0  # seconds between index.html re-renders after takes (0: never)


class OnDemand:
    """A single worker taking missed projects; offer() never blocks."""

    def __init__(
        self,
        layout: Layout,
        configs: Sequence[PythonConfig],
        *,
        per_minute: int = PER_MINUTE,
        queue_size: int = QUEUE,
        settings: take.Settings | None = None,
        say: Callable[[str], None] = lambda _msg: None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        index_every: float = INDEX_EVERY,
    ) -> None:
        self.layout = layout
        self.configs = [c for c in configs if c.on_demand]
        self.per_minute = max(1, per_minute)
        self.settings = settings or take.Settings(layout.state / "uv-cache")
        self.say = say
        self.clock = clock
        self.wall = wall
        self.index_every = index_every
        periods = [c.refresh for c in configs if c.refresh]
        self.refresh_every: float | None = min(periods) if periods else None
        self._queue: queue.Queue[str | None] = queue.Queue(max(1, queue_size))
        self._queued: set[str] = set()
        self._recent: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()
        self._counts: collections.Counter[str] = collections.Counter()
        self._stop = threading.Event()
        self._next_refresh = clock() + self.refresh_every if self.refresh_every else None
        self._index_due: float | None = None
        self._last_index = -index_every
        self.handled = 0  # projects the worker has looked at (for tests)
        self._thread = threading.Thread(target=self._loop, name="ondemand", daemon=False)

    def start(self) -> OnDemand:
        self._thread.start()
        return self

    # --- the watcher's thread ---------------------------------------------------------

    def offer(self, requested: Iterable[str]) -> int:
        """Queue the admitted projects among these missed names; return how many."""
        queued = 0
        for raw in requested:
            project = names.project(raw)
            if project is None:
                self._count("ondemand_refused")
                continue
            if not any(c.takes(project) for c in self.configs):
                self._count("ondemand_outside")
                continue
            with self._lock:
                if project in self._queued:
                    continue
                try:
                    self._queue.put_nowait(project)
                except queue.Full:
                    self._counts["ondemand_queue_full"] += 1
                    continue
                self._queued.add(project)
            queued += 1
        return queued

    def offer_open_misses(self, limit: int = QUEUE) -> int:
        """At start: the missing projects recorded before (a restart, a crash) that the
        index still lacks, most recent first."""
        conn = store.connect(self.layout.db)
        try:
            rows = conn.execute(
                "SELECT url FROM misses WHERE kind = 'project' AND dismissed = 0 "
                "ORDER BY last_seen DESC LIMIT ?",
                (limit,),
            ).fetchall()
        finally:
            conn.close()
        return self.offer(r[0] for r in rows if not self._served(r[0]))

    def close(self, *, drain: bool = False) -> None:
        """Stop: finish the project being taken and store the counts. With `drain`
        (`watch --once`), take everything queued first."""
        if drain and self._thread.is_alive():
            self._queue.join()
        self._stop.set()
        if self._thread.is_alive():
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                pass
            self._thread.join()
        self._flush()

    # --- the worker thread ------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                project = self._queue.get(timeout=self._wait())
            except queue.Empty:
                project = None
            if self._stop.is_set():
                if project is not None:
                    self._queue.task_done()
                break
            try:
                if project is not None:
                    self._handle(project)
                self._maybe_refresh()
                self._maybe_index()
            finally:
                if project is not None:
                    with self._lock:
                        self._queued.discard(project)
                        self.handled += 1
                    self._queue.task_done()
                self._flush()

    def _wait(self) -> float:
        waits = [1.0]
        if self._next_refresh is not None:
            waits.append(max(0.0, self._next_refresh - self.clock()))
        if self._index_due is not None:
            waits.append(max(0.0, self._index_due - self.clock()))
        return min(waits)

    def _handle(self, project: str) -> None:
        if self._served(project):
            return
        conn = store.connect(self.layout.db)
        try:
            last = attempts.get(conn, project)
            now = self.wall()
            if last is not None and last.status != attempts.TAKEN and now < last.retry_at:
                self._count("ondemand_backoff")
                return
            if not self._within_rate():
                self._count("ondemand_over_rate")
                return
            cfg = next(c for c in self.configs if c.takes(project))
            try:
                outcome = take.take(self.layout, cfg, project, self.settings, say=self.say)
            except (WithcacheError, OSError, sqlite3.Error) as exc:  # e.g. a full disk
                outcome = take.Outcome(project, attempts.FAILED, f"{project}: {exc}")
            row = attempts.record(conn, project, outcome.status, outcome.detail, self.wall())
        finally:
            conn.close()
        self._count(f"ondemand_{outcome.status}")
        if outcome.status == attempts.FAILED:
            self.say(
                f"on demand: {project} failed (attempt {row.attempts}, next try in "
                f"{row.retry_at - row.at:.0f}s): {outcome.detail}"
            )
        if outcome.published and self.index_every > 0:
            self._index_due = self._index_due or self._last_index + self.index_every

    def _served(self, project: str) -> bool:
        return (self.layout.www / "simple" / project / "index.html").is_file()

    def _within_rate(self) -> bool:
        """Room for one more upstream attempt in the last minute? (records it if so)"""
        now = self.clock()
        while self._recent and now - self._recent[0] >= 60.0:
            self._recent.popleft()
        if len(self._recent) >= self.per_minute:
            return False
        self._recent.append(now)
        return True

    def _maybe_refresh(self) -> None:
        if self._next_refresh is None or self.clock() < self._next_refresh:
            return
        from withcache.pyindex import refresh

        assert self.refresh_every is not None
        self._next_refresh = self.clock() + self.refresh_every
        try:
            done = refresh.run(
                self.layout,
                self.configs,
                self.settings.uv_cache,
                say=self.say,
                settings=self.settings,
            )
        except (WithcacheError, OSError, sqlite3.Error) as exc:
            self.say(f"on demand refresh failed: {exc}")
            return
        self._count("ondemand_refreshes")
        if done.read or done.failed:
            self.say(f"on demand refresh: {done.line()}")
            for problem in done.failed:
                self.say(f"on demand refresh: {problem}")
        if done.written and self.index_every > 0:
            self._index_due = self._index_due or self._last_index + self.index_every

    def _maybe_index(self) -> None:
        """index.html flags projects taken on demand: re-render, at most every index_every."""
        if self._index_due is None or self.clock() < self._index_due:
            return
        self._index_due = None
        self._last_index = self.clock()
        try:
            index.render(self.layout)
        except OSError as exc:
            self.say(f"cannot re-render the index: {exc}")

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def _flush(self) -> None:
        with self._lock:
            counts, self._counts = dict(self._counts), collections.Counter()
        if not counts:
            return
        conn = store.connect(self.layout.db)
        try:
            with store.transaction(conn):
                store.add_counters(conn, counts)
        finally:
            conn.close()
