"""`withcache watch`: access-log lines in, hits and misses out.

Lines are parsed and added up in memory, then written in one transaction together
with the log position they reach, so `kill -9` at any moment neither loses nor
double-counts a line: after a restart the watcher continues from the last commit.
Batches are large (up to BATCH_LINES lines or BATCH_SECONDS) while catching up and
one commit per wake-up when following live traffic, which keeps a miss queryable
within milliseconds of nginx writing it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from withcache import index, lock, role, store
from withcache.accesslog import (
    Hit,
    Ignored,
    Invalid,
    MirrorHit,
    MirrorMiss,
    Miss,
    PageHit,
    ProjectMiss,
    parse_line,
)
from withcache.errors import WithcacheError
from withcache.layout import Layout
from withcache.mirrors import traffic as mirror_traffic
from withcache.mirrors.paths import MirrorRef
from withcache.tail import Block, Changes, Follower, Warn

BATCH_LINES = 100_000
BATCH_SECONDS = 1.0
RECHECK = 1.0  # seconds between safety re-checks when no change event arrives
KNOWN_CLIENTS = 20_000  # (miss, client) pairs remembered as already stored
SETTLE = 0.1  # re-check interval while a rotated log is still being read
DISK_FULL_RETRY = 5.0  # seconds between commits tried on a full disk


@dataclass
class Tally:
    """The lines read since the last commit, added up."""

    traffic: store.Traffic = field(default_factory=store.Traffic)
    lines: int = 0
    hits: int = 0
    hit_bytes: int = 0
    misses: int = 0
    project_misses: int = 0
    invalid: int = 0
    garbage: int = 0
    page_hits: int = 0  # /simple/ pages served
    page_bytes: int = 0
    m_hits: int = 0  # of hits, those under /m/
    m_hit_bytes: int = 0
    m_misses: int = 0  # of misses, those under /m/
    mirror_hits: dict[MirrorRef, store.HitTally] = field(default_factory=dict)  # keyed at commit

    def add(self, block: Block) -> None:
        self.garbage += block.oversize
        self.lines += block.oversize
        if not block.data:
            return
        lines = block.data.decode("utf-8", "replace").split("\n")
        lines.pop()  # a block ends with a newline: the last piece is empty
        self.lines += len(lines)
        hits = self.traffic.hits
        misses = self.traffic.misses
        clients = self.traffic.clients
        for line in lines:
            r = parse_line(line)
            if type(r) is Hit:
                h = hits.get(r.key)
                if h is None:
                    hits[r.key] = store.HitTally(1, r.bytes, r.time)
                else:
                    h.count += 1
                    h.bytes += r.bytes
                    if r.time > h.last:
                        h.last = r.time
                self.hits += 1
                self.hit_bytes += r.bytes
            elif type(r) is Miss or type(r) is ProjectMiss or type(r) is MirrorMiss:
                key = r.key
                m = misses.get(key)
                if m is None:
                    if isinstance(r, Miss):
                        misses[key] = store.MissTally(r.url, "url", 1, r.time, r.time, r.ua)
                    elif isinstance(r, MirrorMiss):
                        misses[key] = store.MissTally(r.url, "mirror", 1, r.time, r.time, r.ua)
                    else:
                        misses[key] = store.MissTally(r.project, "project", 1, r.time, r.time, r.ua)
                else:
                    m.count += 1
                    if r.time < m.first:
                        m.first = r.time
                    if r.time >= m.last:
                        m.last = r.time
                        m.last_ua = r.ua
                if r.addr:
                    clients.add((key, r.addr))
                if type(r) is ProjectMiss:
                    self.project_misses += 1
                else:
                    self.misses += 1
                    if type(r) is MirrorMiss:
                        self.m_misses += 1
            elif type(r) is MirrorHit:
                mirror_traffic.tally_hit(self.mirror_hits, r.ref, r.bytes, r.time)
                self.hits += 1
                self.hit_bytes += r.bytes
                self.m_hits += 1
                self.m_hit_bytes += r.bytes
            elif type(r) is Ignored:
                continue
            elif type(r) is PageHit:
                self.page_hits += 1
                self.page_bytes += r.bytes
            elif type(r) is Invalid:
                self.invalid += 1
            else:
                self.garbage += 1

    def counters(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in store.COUNTERS}


class Watcher:
    """Follows one access log into the state DB until stopped."""

    def __init__(
        self,
        layout: Layout,
        log: Path,
        *,
        warn: Warn = lambda _msg: None,
        on_commit: Callable[[Tally], None] | None = None,
        index_every: float = 0.0,
        upkeep: Sequence[Callable[[bool], None]] = (),
    ) -> None:
        self.layout = layout
        self.log = log
        self.log_id = log_id(log)
        self.warn = warn
        self.on_commit = on_commit
        self.index_every = index_every
        self.upkeep = upkeep  # each called when idle (and with True at the end): metrics, budget
        self.totals = Tally()
        self._stop = threading.Event()
        self._changes = Changes(log)
        self._index_due: float | None = None
        self._known_clients: set[tuple[str, str]] = set()

    def stop(self) -> None:
        """Ask run() to commit what it read and return (safe from a signal handler)."""
        self._stop.set()
        self._changes.wake()

    def run(self, *, once: bool = False) -> Tally:
        """Follow the log; with `once`, stop at its current end. Returns what was read."""
        with locked(self.layout), contextlib.closing(self._connect()) as conn:
            start = store.checkpoint(conn, self.log_id)
            follower = Follower(self.log, start, warn=self.warn)
            try:
                with self._changes:
                    self._loop(conn, follower, once)
            finally:
                follower.close()
                self._render_index(force=self._index_due is not None)
                self._run_upkeep(final=True)
        return self.totals

    def _connect(self) -> sqlite3.Connection:
        try:
            return store.connect(self.layout.db)
        except sqlite3.OperationalError as exc:
            if store.is_disk_full(exc):
                raise DiskFull(f"the disk holding {self.layout.db} is full; cannot start") from exc
            raise

    def _loop(self, conn: sqlite3.Connection, follower: Follower, once: bool) -> None:
        tally: Tally | None = None
        at = follower.position
        started = time.monotonic()
        while True:
            block = follower.read()
            if block is not None:
                if tally is None:
                    tally, started = Tally(), time.monotonic()
                tally.add(block)
                at = block.at
                full = tally.lines >= BATCH_LINES or time.monotonic() - started >= BATCH_SECONDS
                if not full and not self._stop.is_set():
                    continue
            if tally is not None:
                self._commit(conn, tally, at)
                tally = None
            if self._stop.is_set():
                return
            if block is not None:
                continue
            if once and not follower.settling:
                return
            self._render_index()
            self._run_upkeep()
            self._changes.wait(SETTLE if follower.settling else RECHECK)

    def _commit(self, conn: sqlite3.Connection, tally: Tally, at: store.Checkpoint) -> None:
        counts = tally.counters()
        traffic = tally.traffic
        traffic.counters = counts
        fresh = traffic.clients - self._known_clients  # a pair already stored adds nothing
        traffic.clients = fresh
        mirror_traffic.key_hits(conn, tally.mirror_hits, traffic.hits)
        self._record(conn, traffic, at)
        if len(self._known_clients) + len(fresh) > KNOWN_CLIENTS:
            self._known_clients.clear()  # bounded memory; forgetting only costs an insert
        self._known_clients |= fresh
        for name, n in counts.items():
            setattr(self.totals, name, getattr(self.totals, name) + n)
        if self.index_every and (tally.traffic.hits or tally.traffic.misses):
            self._index_due = self._index_due or time.monotonic() + self.index_every
        if self.on_commit is not None:
            self.on_commit(tally)
        self._run_upkeep()  # also while catching up on a long backlog (each keeps its pace)

    def _record(
        self, conn: sqlite3.Connection, traffic: store.Traffic, at: store.Checkpoint
    ) -> None:
        """Commit a batch; on a full disk, say so and try again until there is room (or
        until stopped). Nothing is lost either way: the checkpoint moves only with the
        counts, so a restart reads the same lines again."""
        waited = False
        while True:
            try:
                store.record_traffic(conn, traffic, self.log_id, at)
            except sqlite3.OperationalError as exc:
                if not store.is_disk_full(exc):
                    raise
                if not waited:
                    self.warn(
                        f"the disk holding {self.layout.db} is full: {traffic_lines(traffic)} "
                        f"are waiting to be recorded; retrying every {DISK_FULL_RETRY:g}s"
                    )
                    waited = True
                if self._stop.wait(DISK_FULL_RETRY):
                    raise DiskFull(
                        f"the disk holding {self.layout.db} is full; stopped at byte "
                        f"{at.offset} of {self.log}; a restart reads on from there"
                    ) from exc
                continue
            if waited:
                self.warn("there is room again: the waiting lines are recorded")
            return

    def _run_upkeep(self, final: bool = False) -> None:
        """Jobs that keep their own pace (metrics, the disk budget); a failing one warns."""
        for job in self.upkeep:
            try:
                job(final)
            except (OSError, sqlite3.Error, WithcacheError) as exc:
                self.warn(f"{getattr(job, 'what', 'upkeep')}: {exc}")

    def _render_index(self, force: bool = False) -> None:
        """Keep index.html's hit counts and misses fresh, at most every `index_every` s."""
        due = self._index_due
        if due is None or (not force and time.monotonic() < due):
            return
        self._index_due = None
        if role.not_own_tree(self.layout) is not None:
            return  # a replica's index comes from the center; an edge has none
        try:
            index.render(self.layout)
        except OSError as exc:
            self.warn(f"cannot re-render the index: {exc}")


class DiskFull(WithcacheError):
    """The watcher was stopped while its DB's disk was full (nothing was lost)."""


def traffic_lines(traffic: store.Traffic) -> str:
    n = len(traffic.hits) + len(traffic.misses)
    return f"counts for {n} artifacts and misses"


def log_id(log: Path) -> str:
    """The name a log's checkpoint is stored under."""
    return os.path.abspath(log)


@contextlib.contextmanager
def locked(layout: Layout) -> Iterator[None]:
    """One watcher per data dir: two would count every line twice."""
    busy = f"another watcher is running on {layout.root} (pid {{pid}})"
    with lock.hold(layout.state / "watch.lock", busy):
        yield


@dataclass(frozen=True)
class Status:
    """Where the watcher is in a log, and how far behind the log's end."""

    log: str
    checkpoint: store.Checkpoint | None
    updated: float | None
    size: int | None  # of the log file now
    behind: int | None  # bytes not yet read, when the checkpoint is in the current file
    counters: dict[str, int]


def status(layout: Layout, log: Path) -> Status:
    conn = store.connect(layout.db)
    try:
        lid = log_id(log)
        ckpt = store.checkpoint(conn, lid)
        row = conn.execute("SELECT updated FROM log_offsets WHERE log = ?", (lid,)).fetchone()
        counts = store.counters(conn)
    finally:
        conn.close()
    try:
        st = os.stat(log)
    except OSError:
        st = None
    behind = None
    if st is not None:
        behind = st.st_size - ckpt.offset if ckpt and ckpt.inode == st.st_ino else st.st_size
    return Status(
        lid,
        ckpt,
        row[0] if row else None,
        st.st_size if st else None,
        behind,
        counts,
    )
