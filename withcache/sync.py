"""`withcache sync`: plan, fetch in parallel, place atomically, record, render the index.

Every failure is collected and reported at the end; one bad origin never stops
the others. A file lock keeps two syncs on one data dir from interleaving.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import requests

from withcache import fetch, keys, lock, placement, store, tree
from withcache.manifest import Manifest, resolve_headers
from withcache.plan import Fetch, Plan, Wanted, plan
from withcache.progress import Progress, human
from withcache.settings import Layout


@dataclass(frozen=True)
class Options:
    jobs: int = 4
    refresh: bool = False
    prune: bool = False
    wait: bool = False
    policy: fetch.Policy = field(default_factory=fetch.Policy)


@dataclass
class Summary:
    fetched: int = 0
    present: int = 0
    unchanged: int = 0
    removed: int = 0
    bytes: int = 0
    failed: list[tuple[Wanted, str]] = field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        parts = [
            f"{self.fetched} fetched ({human(self.bytes)})",
            f"{self.present} present",
        ]
        if self.unchanged:
            parts.append(f"{self.unchanged} unchanged")
        if self.removed:
            parts.append(f"{self.removed} pruned")
        parts.append(f"{len(self.failed)} failed")
        return ", ".join(parts) + f" in {self.seconds:.1f}s"


def wanted_from_manifest(manifest: Manifest) -> list[Wanted]:
    """The URL entries as sync work items (headers resolved from the environment)."""
    return [
        Wanted(
            key=e.key,
            url=e.url,
            name=keys.name(e.key),
            where=e.where,
            sha256=e.sha256,
            headers=tuple(resolve_headers(e).items()),
        )
        for e in manifest.entries
    ]


@contextlib.contextmanager
def locked(layout: Layout, wait: bool = False) -> Iterator[None]:
    """Hold the data dir's sync lock; say who holds it when we cannot wait."""
    busy = (
        f"another sync is running on {layout.root} (pid {{pid}}); "
        "wait for it to finish or pass --wait"
    )
    with lock.hold(layout.lock, busy, wait):
        yield


def on_disk_sizes(layout: Layout, records: dict[str, store.Artifact]) -> dict[str, int]:
    """Sizes of the recorded blobs present on disk (one stat each, no hashing).

    Plain string paths: pathlib objects cost more than the stat on a 10,000-entry sync.
    """
    www = str(layout.www)
    sizes = {}
    for key in records:
        try:
            sizes[key] = os.stat(f"{www}/{keys.blob_relpath(key)}").st_size
        except (FileNotFoundError, NotADirectoryError):
            continue
    return sizes


def make_plan(layout: Layout, wanted: Sequence[Wanted], opts: Options) -> Plan:
    conn = store.connect(layout.db)
    try:
        records = store.artifacts(conn)
    finally:
        conn.close()
    return plan(
        wanted, records, on_disk_sizes(layout, records), refresh=opts.refresh, prune=opts.prune
    )


def run(layout: Layout, wanted: Sequence[Wanted], opts: Options, progress: Progress) -> Summary:
    """Bring the tree in line with `wanted`; the caller renders the index afterwards."""
    layout.ensure()
    started = time.monotonic()
    with locked(layout, opts.wait):
        the_plan = make_plan(layout, wanted, opts)
        summary = Summary(present=len(the_plan.keep))
        conn = store.connect(layout.db)
        conn_lock = threading.Lock()
        try:
            for r in the_plan.remove:
                tree.remove(layout, r.artifact.key)
                store.delete_artifact(conn, r.artifact.key)
                progress.note(f"pruned {r.artifact.url}")
                summary.removed += 1
            progress.begin(len(the_plan.fetch))
            worker = _Worker(layout, opts, progress, conn, conn_lock, summary)
            pool = ThreadPoolExecutor(max(1, opts.jobs), thread_name_prefix="fetch")
            try:
                list(pool.map(worker, the_plan.fetch))
            except KeyboardInterrupt:
                worker.stopping.set()  # workers stop at their next chunk; partials stay
                pool.shutdown(wait=False, cancel_futures=True)
                raise
            pool.shutdown()
        finally:
            progress.close()
            conn.close()
    summary.seconds = time.monotonic() - started
    return summary


class _Stopped(Exception):
    """Ctrl-C: leave the partial file for the next sync to resume."""


class _Worker:
    """Runs one Fetch; one requests.Session per worker thread (connection reuse)."""

    def __init__(
        self,
        layout: Layout,
        opts: Options,
        progress: Progress,
        conn: sqlite3.Connection,
        conn_lock: threading.Lock,
        summary: Summary,
    ) -> None:
        self.layout = layout
        self.opts = opts
        self.progress = progress
        self.conn = conn
        self.conn_lock = conn_lock
        self.summary = summary
        self.local = threading.local()
        self.stopping = threading.Event()

    def session(self) -> requests.Session:
        s = getattr(self.local, "session", None)
        if s is None:
            s = self.local.session = fetch.new_session()
        return s

    def __call__(self, job: Fetch) -> None:
        w = job.wanted
        known = job.known if job.reason == "refresh" else None
        req = fetch.Request(
            url=w.url,
            key=w.key,
            headers=dict(w.headers),
            sha256=w.sha256,
            etag=known.etag if known else None,
            last_modified=known.last_modified if known else None,
        )
        self.progress.file_started(w.key, w.name, None)
        try:
            result = fetch.fetch(
                self.session(),
                req,
                self.layout.partial,
                self.opts.policy,
                progress=lambda n: self._advance(w.key, n),
                on_length=lambda total: self.progress.file_started(w.key, w.name, total),
                on_retry=lambda msg: self.progress.note(f"{w.url}: {msg}"),
            )
            if result.path is None:
                self._unchanged(job)
                return
            self._place(job, result)
        except fetch.FetchFailed as exc:
            self._failed(w, str(exc))
        except OSError as exc:
            self._failed(w, f"local error: {exc}")
        except _Stopped:
            return

    def _advance(self, key: str, n: int) -> None:
        if self.stopping.is_set():
            raise _Stopped
        self.progress.advance(key, n)

    def _place(self, job: Fetch, result: fetch.Result) -> None:
        """Record, then rename: www/ never holds a file whose hash differs from its record."""
        w = job.wanted
        assert result.path is not None
        record = store.Artifact(
            key=w.key,
            url=w.url,
            name=w.name,
            size=result.size,
            sha256=result.sha256,
            fetched_at=time.time(),
            etag=result.etag,
            last_modified=result.last_modified,
            source=w.source,
        )
        with self.conn_lock:
            placement.install(
                self.layout,
                self.conn,
                record,
                result.path,
                result.mtime,
                replacing=job.known is not None,
            )
        fetch.discard_partial(self.layout.partial, w.key)
        with self.conn_lock:
            self.summary.fetched += 1
            self.summary.bytes += result.size - result.resumed_from
        resumed = f", resumed at {human(result.resumed_from)}" if result.resumed_from else ""
        self.progress.file_done(w.key, f"fetched {w.url} ({human(result.size)}{resumed})")

    def _unchanged(self, job: Fetch) -> None:
        with self.conn_lock:
            self.summary.unchanged += 1
        self.progress.file_done(job.wanted.key, f"unchanged {job.wanted.url}")

    def _failed(self, w: Wanted, error: str) -> None:
        with self.conn_lock:
            self.summary.failed.append((w, error))
            store.record_failure(self.conn, w.key, w.url, error)
        self.progress.file_done(w.key, f"FAILED {w.url} ({w.where}): {error}", ok=False)


def head_sizes(wanted: Sequence[Wanted], timeout: float = 5.0, jobs: int = 8) -> dict[str, int]:
    """Sizes the origins announce (for `sync --dry-run`); unknown ones are left out."""

    def one(w: Wanted) -> tuple[str, int | None]:
        try:
            r = requests.head(w.url, headers=dict(w.headers), timeout=timeout, allow_redirects=True)
            n = r.headers.get("Content-Length")
            return w.key, int(n) if r.ok and n and n.isdigit() else None
        except requests.RequestException:
            return w.key, None

    with ThreadPoolExecutor(jobs) as pool:
        return {k: n for k, n in pool.map(one, wanted) if n is not None}


def describe_plan(p: Plan, sizes: dict[str, int]) -> list[str]:
    """The reviewer's view: what would be fetched and pruned, with sizes where known."""
    lines = []
    total = 0
    for f in p.fetch:
        n = sizes.get(f.wanted.key)
        total += n or 0
        size = human(n) if n is not None else "size unknown"
        lines.append(f"fetch  {f.wanted.url}  ({size}, {f.reason})")
    for r in p.remove:
        lines.append(f"prune  {r.artifact.url}  ({human(r.artifact.size)})")
    lines.append(
        f"{len(p.fetch)} to fetch ({human(total)} known), {len(p.keep)} present, "
        f"{len(p.remove)} to prune"
    )
    return lines
