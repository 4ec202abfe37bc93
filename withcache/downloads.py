"""Fetch a plan's downloads in parallel and place them as they finish.

Worker threads only download (network, disk, hashing: all outside the GIL for the
most part). One placer thread owns the state DB connection: it records and places
what the workers verified, a group at a time (one lock, one transaction), and
records failures. So no SQLite connection is ever shared between threads, the
workers never wait for the database, and a failure to record a failure (a full
disk) is reported instead of killing the run. Workers are always joined, and then
the placer, before the connection closes.
"""

from __future__ import annotations

import errno
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from withcache import fetch, placement, store, transport
from withcache.fmt import human
from withcache.layout import Layout
from withcache.mirrors import sources
from withcache.plan import Fetch, Wanted
from withcache.progress import Progress

GROUP = 64  # verified downloads placed under one lock and one transaction at most


@dataclass
class Outcome:
    """What the downloads came to."""

    fetched: int = 0
    unchanged: int = 0
    bytes: int = 0
    failed: list[tuple[Wanted, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Done:
    job: Fetch
    result: fetch.Result


@dataclass(frozen=True)
class _Unchanged:
    job: Fetch


@dataclass(frozen=True)
class _Failed:
    wanted: Wanted
    error: str


class Stopped(Exception):
    """Ctrl-C: the partial file stays for the next sync to resume."""


class Downloads:
    """One run over a list of Fetch jobs."""

    def __init__(
        self,
        layout: Layout,
        jobs: int,
        policy: fetch.Policy,
        progress: Progress,
        client: Callable[[], transport.Client] = transport.Client,
        partial: Path | None = None,
    ) -> None:
        self.layout = layout
        self.partial = partial or layout.partial  # another writer keeps its own partials
        self.jobs = max(1, jobs)
        self.policy = policy
        self.progress = progress
        self.new_client = client
        self.outcome = Outcome()
        self.stopping = threading.Event()
        self._clients = transport.Clients()
        self._queue: queue.SimpleQueue[_Done | _Unchanged | _Failed | None] = queue.SimpleQueue()

    def run(self, work: Sequence[Fetch]) -> Outcome:
        """Fetch and place everything in `work`; return when all of it is settled."""
        self.progress.begin(len(work))
        placer = threading.Thread(target=self._place_loop, name="placer")
        placer.start()
        pool = ThreadPoolExecutor(self.jobs, thread_name_prefix="fetch")
        try:
            list(pool.map(self._one, work))
        except KeyboardInterrupt:
            # Leave at once: a worker blocked on a slow origin would hold us up to a read
            # timeout. Everything on disk is crash-safe; the caller exits the process.
            self.stopping.set()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        except BaseException:
            self.stopping.set()
            self._finish(pool, placer)
            raise
        self._finish(pool, placer)
        return self.outcome

    def _finish(self, pool: ThreadPoolExecutor, placer: threading.Thread) -> None:
        """Join the workers, then the placer (which closes the DB connection)."""
        pool.shutdown(wait=True)
        self._queue.put(None)
        placer.join()
        self._clients.close()

    # --- worker threads -------------------------------------------------------------

    def _one(self, job: Fetch) -> None:
        if self.stopping.is_set():
            return
        w = job.wanted
        known = job.known if job.reason == "refresh" else None
        req = fetch.Request(
            url=w.url,
            key=w.key,
            headers=dict(w.headers),
            sha256=w.sha256,
            etag=known.etag if known else None,
            last_modified=known.last_modified if known else None,
            header_hosts=w.header_hosts,
        )
        self.progress.file_started(w.key, w.name, None)
        try:
            result = sources.fetcher_for(w)(
                self._clients.get(self.new_client),
                req,
                self.partial,
                self.policy,
                progress=lambda n: self._advance(w.key, n),
                on_length=lambda total: self.progress.file_started(w.key, w.name, total),
                on_retry=lambda msg: self.progress.note(f"{w.url}: {msg}"),
            )
        except fetch.DiskFull as exc:
            fetch.discard_partial(self.partial, w.key)  # space first, resume later
            self._queue.put(_Failed(w, self._disk_full(exc)))
            return
        except fetch.FetchFailed as exc:
            self._queue.put(_Failed(w, str(exc)))
            return
        except OSError as exc:
            self._queue.put(_Failed(w, f"local error: {exc}"))
            return
        except Stopped:
            return
        self._queue.put(_Unchanged(job) if result is None else _Done(job, result))

    def _advance(self, key: str, n: int) -> None:
        if self.stopping.is_set():
            raise Stopped
        self.progress.advance(key, n)

    def _disk_full(self, exc: fetch.DiskFull) -> str:
        if exc.min_free and not exc.total:
            return (
                f"stopped after {human(exc.wrote)}: the data dir's filesystem is down to its "
                f"min_free of {human(exc.min_free)} ({free_space(self.layout)})"
            )
        need = f"needs {human(exc.total)}" if exc.total else f"stopped after {human(exc.wrote)}"
        return (
            f"no space left on the data dir {self.layout.root}: {need}, {free_space(self.layout)}"
        )

    # --- the placer thread ----------------------------------------------------------

    def _place_loop(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                batch = [first]
                while len(batch) < GROUP:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        self._queue.put(None)  # seen after this batch
                        break
                    batch.append(item)
                if conn is None:
                    conn = self._connect()
                self._settle(conn, batch)
        finally:
            if conn is not None:
                conn.close()

    def _connect(self) -> sqlite3.Connection | None:
        """The placer's connection; None when the DB cannot even be opened (a full disk):
        then nothing is placed, and every download is reported as failed."""
        try:
            return store.connect(self.layout.db)
        except (OSError, sqlite3.Error) as exc:
            self._warn(f"cannot open the state DB: {_db_or_disk(exc, self.layout)}")
            return None

    def _warn(self, note: str) -> None:
        if note not in self.outcome.warnings:
            self.outcome.warnings.append(note)

    def _settle(
        self, conn: sqlite3.Connection | None, batch: list[_Done | _Unchanged | _Failed]
    ) -> None:
        for u in batch:
            if isinstance(u, _Unchanged):
                self.outcome.unchanged += 1
                self.progress.file_done(u.job.wanted.key, f"unchanged {u.job.wanted.url}")
        done = [d for d in batch if isinstance(d, _Done)]
        if done:
            self._place(conn, done)
        for f in batch:
            if isinstance(f, _Failed):
                self._fail(conn, f.wanted, f.error)

    def _place(self, conn: sqlite3.Connection | None, done: list[_Done]) -> None:
        items = [
            placement.Item(
                d.result,
                key=d.job.wanted.key,
                url=d.job.wanted.url,
                source=d.job.wanted.source,
                name=d.job.wanted.name,
                replacing=d.job.known is not None,
                mirror=sources.mirror_placement(d.job.wanted, d.result),
            )
            for d in done
        ]
        try:
            if conn is None:
                raise sqlite3.OperationalError("the state DB could not be opened")
            placement.install_many(self.layout, conn, items)
        except (OSError, sqlite3.Error) as exc:
            for d in done:
                self._fail(conn, d.job.wanted, f"cannot place: {_db_or_disk(exc, self.layout)}")
            return
        for d in done:
            w, r = d.job.wanted, d.result
            fetch.discard_partial(self.partial, w.key)
            self.outcome.fetched += 1
            self.outcome.bytes += r.size - r.resumed_from
            resumed = f", resumed at {human(r.resumed_from)}" if r.resumed_from else ""
            note = f"fetched {w.url}{sources.via(w, r)} ({human(r.size)}{resumed})"
            self.progress.file_done(w.key, note)

    def _fail(self, conn: sqlite3.Connection | None, w: Wanted, error: str) -> None:
        self.outcome.failed.append((w, error))
        self.progress.file_done(w.key, f"FAILED {w.url} ({w.where}): {error}", ok=False)
        if conn is None:
            return
        try:
            store.record_failure(conn, w.key, w.url, error)
        except (OSError, sqlite3.Error) as exc:
            self._warn(f"could not record a failure: {_db_or_disk(exc, self.layout)}")


def free_space(layout: Layout) -> str:
    """'N free' for the filesystem holding the data dir, for disk-full messages."""
    try:
        st = os.statvfs(layout.state if layout.state.exists() else layout.root)
    except OSError:
        return "free space unknown"
    return f"{human(st.f_bavail * st.f_frsize)} free"


def _db_or_disk(exc: BaseException, layout: Layout) -> str:
    text = str(exc)
    if "disk is full" in text or getattr(exc, "errno", None) == errno.ENOSPC:
        return f"no space left on the data dir {layout.root} ({free_space(layout)})"
    return text
