"""The disk budget: how much the store may hold, and evicting what no manifest lists.

Artifacts a person reviewed (listed in a manifest, resolved for the Python index,
uploaded, mirrored) are never evicted. Everything else (auto-filled, fetched on demand)
may be: least recently used first, where "used" is the later of its last hit and
when it arrived, so a file fetched a moment ago for the miss that asked for it is not
the first to go.

Eviction is one artifact at a time under the placement lock: the blob is unlinked,
then its record is deleted and the eviction recorded in one transaction (a crash in
between leaves a record without a blob, as placement's own crash does). A client
already reading the file keeps its bytes: an unlinked inode lives until the last
descriptor closes, and nginx serves from a descriptor. See DESIGN.md, "Disk budget".

`ensure_room()` is the one question every writer asks before adding bytes ("is there
room for N bytes under min_free and the budget?"); it evicts what it may first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from withcache import placement, store, tree
from withcache.errors import WithcacheError
from withcache.fmt import human
from withcache.layout import Layout
from withcache.mirrors import tree as mirror_tree
from withcache.storeconfig import StoreConfig

if TYPE_CHECKING:
    from withcache import fetch

# Sources a person put there: never evicted. Every other source is evictable.
KEPT_SOURCES = frozenset({"manifest", "python", "upload", "mirror"})
DEFAULT_MAX_SIZE = 64 << 30  # fetch.Policy's own default: one download of unknown size


class NoRoom(WithcacheError):
    """N more bytes do not fit under min_free or the budget, even after evicting."""

    def __init__(self, why: str) -> None:
        super().__init__(f"no room: {why}")
        self.why = why


@dataclass(frozen=True)
class Limits:
    """The store's limits in bytes, percentages resolved against the filesystem."""

    budget: int | None = None
    min_free: int = 0
    max_size: int | None = None  # None: the download policy's own (64 GiB)
    filesystem: int = 0  # size of the data dir's filesystem

    @property
    def any(self) -> bool:
        return self.budget is not None or self.min_free > 0


class Candidate(NamedTuple):
    """An evictable artifact, with when it was last used (a tuple: a scan makes 100,000)."""

    key: str
    size: int
    source: str
    last_used: float


@dataclass(frozen=True)
class Disk:
    """The filesystem holding the data dir."""

    size: int
    free: int


def disk(layout: Layout) -> Disk:
    """Size and free bytes (for an unprivileged writer) of the data dir's filesystem."""
    for d in (layout.state, layout.root, layout.root.parent):
        try:
            st = os.statvfs(d)
        except OSError:
            continue
        return Disk(st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize)
    return Disk(0, 0)


def limits(layout: Layout, config: StoreConfig | None, *, max_size: int | None = None) -> Limits:
    """The limits a manifest's `store:` section sets for this data dir. `max_size`
    (the command line's --max-size) wins over the section's."""
    size = disk(layout).size
    if config is None:
        return Limits(max_size=max_size, filesystem=size)
    return Limits(
        budget=config.budget.of(size) if config.budget else None,
        min_free=config.min_free.of(size) if config.min_free else 0,
        max_size=max_size or config.max_size,
        filesystem=size,
    )


def max_size(config: StoreConfig | None) -> int:
    """The ceiling for one download: the section's max_size, else 64 GiB."""
    return (config.max_size if config else None) or DEFAULT_MAX_SIZE


# --- what may go, and in which order ---------------------------------------------------


def stored_bytes(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT coalesce(sum(size), 0) FROM artifacts").fetchone()[0])


def candidates(conn: sqlite3.Connection, listed: Collection[str] = ()) -> list[Candidate]:
    """Evictable artifacts, least recently used first (one query: 100,000 rows in well
    under a second). `listed`: keys a manifest lists now, whatever their source."""
    kept = sorted(KEPT_SOURCES)
    rows = conn.execute(
        "SELECT a.key, a.size, a.source, max(a.fetched_at, coalesce(h.last_hit, 0)) AS used "
        "FROM artifacts a LEFT JOIN hits h ON h.key = a.key "
        f"WHERE a.source NOT IN ({', '.join('?' * len(kept))}) "
        "ORDER BY used, a.key",
        kept,
    )
    make = Candidate._make
    if not listed:
        return list(map(make, rows))
    return [make(r) for r in rows if r[0] not in listed]


@dataclass(frozen=True)
class Choice:
    """Which candidates to evict, and whether `need` more bytes then fit."""

    victims: list[Candidate]
    fits: bool
    why: str = ""


def choose(
    candidates: Sequence[Candidate],
    *,
    stored: int,
    free: int,
    need: int,
    lim: Limits,
    budget_binds: bool = True,
) -> Choice:
    """The fewest least-recently-used candidates whose eviction makes `need` more bytes
    fit: the store at most `budget` (when `budget_binds`), at least `min_free` left free.
    Pure. Freed bytes count at once, though the kernel may return them only when the
    last reader closes the file."""
    victims: list[Candidate] = []
    freed = 0

    def over() -> tuple[int, int]:
        budget_over = 0
        if lim.budget is not None and budget_binds:
            budget_over = stored - freed + need - lim.budget
        free_short = lim.min_free - (free + freed - need)
        return budget_over, free_short

    for c in candidates:
        b, f = over()
        if b <= 0 and f <= 0:
            break
        victims.append(c)
        freed += c.size
    b, f = over()
    if b <= 0 and f <= 0:
        return Choice(victims, True)
    if f > 0:
        why = (
            f"{human(need)} would leave {human(max(free + freed - need, 0))} free on the data "
            f"dir's filesystem, under min_free {human(lim.min_free)}"
        )
    else:
        why = (
            f"{human(need)} would put the store at {human(stored - freed + need)}, over its "
            f"budget of {human(lim.budget or 0)}"
        )
    if freed or candidates:
        why += f" (after evicting every evictable artifact, {human(freed)})"
    return Choice(victims, False, why)


# --- evicting ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evicted:
    key: str
    url: str
    size: int
    source: str = ""


def evict(
    layout: Layout, conn: sqlite3.Connection, victims: Sequence[Candidate], reason: str
) -> list[Evicted]:
    """Evict each victim on its own: under the placement lock, unlink, then drop the
    record and log the eviction in one transaction. A victim that changed meanwhile
    (now listed, replaced, gone) is left alone."""
    out: list[Evicted] = []
    for v in victims:
        with placement.held(layout):
            row = conn.execute(
                "SELECT source, size, url FROM artifacts WHERE key = ?", (v.key,)
            ).fetchone()
            if row is None or row[0] in KEPT_SOURCES or row[0] != v.source:
                continue
            source, size, url = row
            mirror_tree.unlink_key(layout, conn, v.key)  # a link would keep the bytes
            tree.remove(layout, v.key)
            with store.transaction(conn):
                conn.execute("DELETE FROM artifacts WHERE key = ?", (v.key,))
                conn.execute(
                    "INSERT INTO evictions (key, url, size, source, last_used, at, reason) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (v.key, url, size, source, v.last_used, time.time(), reason),
                )
                store.add_counters(conn, {"evictions": 1, "evicted_bytes": size})
        out.append(Evicted(v.key, url, size, source))
    if any(e.source == ONDEMAND for e in out):
        _republish(layout, {e.key for e in out})
    return out


ONDEMAND = "ondemand"  # files of Python projects taken on demand: listed on index pages


def _republish(layout: Layout, gone: set[str]) -> None:
    """Pages that listed an evicted on-demand file are written again without it (under
    the index lock), so the index stops offering what the store no longer holds."""
    from withcache.pyindex import demand, model, publish

    files = demand.merged(model.load_or_empty(layout), demand.load(layout))
    projects = {f.project for f in files if f.key in gone or f.metadata_key in gone}
    if projects:
        with publish.held(layout):
            publish.render_projects(layout, projects)


_one_at_a_time = threading.Lock()  # two threads of one process must not pick the same bytes


def ensure_room(
    layout: Layout,
    need: int,
    lim: Limits,
    *,
    listed: Collection[str] = (),
    budget_binds: bool = True,
    reason: str = "room",
) -> list[Evicted]:
    """Make room for `need` more bytes: evict least recently used unlisted artifacts
    until the store stays within the budget and min_free stays free; raise NoRoom
    (evicting nothing) when even evicting every evictable artifact would not do.

    `budget_binds=False` for artifacts a manifest lists: the budget then only makes
    room for them (evicting), it never refuses them; min_free always does. Uploads
    and auto-fills leave it True. With no limits set this costs nothing.
    """
    if not lim.any:
        return []
    with _one_at_a_time, contextlib.closing(store.connect(layout.db)) as conn:
        d = disk(layout)
        stored = stored_bytes(conn) if lim.budget is not None else 0
        if not _short(stored, d.free, need, lim, budget_binds):
            return []
        choice = choose(
            candidates(conn, listed),
            stored=stored,
            free=d.free,
            need=need,
            lim=lim,
            budget_binds=budget_binds,
        )
        if not choice.fits:
            raise NoRoom(choice.why)
        return evict(layout, conn, choice.victims, reason)


def _short(stored: int, free: int, need: int, lim: Limits, budget_binds: bool) -> bool:
    if free - need < lim.min_free:
        return True
    return budget_binds and lim.budget is not None and stored + need > lim.budget


@dataclass
class Enforced:
    """What one pass of enforce() did."""

    evicted: list[Evicted] = dataclasses.field(default_factory=list)
    over: int = 0  # bytes still over the budget (listed artifacts alone exceed it)


def enforce(layout: Layout, lim: Limits, listed: Collection[str] = ()) -> Enforced:
    """Bring the store back within its budget (and min_free), evicting what may go.
    What listed artifacts alone take over the budget is reported, never evicted."""
    if not lim.any:
        return Enforced()
    with _one_at_a_time, contextlib.closing(store.connect(layout.db)) as conn:
        d = disk(layout)
        stored = stored_bytes(conn)
        if not _short(stored, d.free, 0, lim, True):
            return Enforced()
        choice = choose(candidates(conn, listed), stored=stored, free=d.free, need=0, lim=lim)
        done = evict(layout, conn, choice.victims, "budget")
        left = stored - sum(e.size for e in done)
        return Enforced(done, max(0, left - lim.budget) if lim.budget is not None else 0)


def policy_for(
    base: fetch.Policy,
    lim: Limits,
    layout: Layout,
    listed: Collection[str] | Callable[[], Collection[str]],
    *,
    binds: bool,
) -> fetch.Policy:
    """`base` with the store's limits: min_free and max_size for every download, and
    room made (evicting) before a download of known size starts. `listed` may be a
    function, asked each time (a watcher's manifests change under it)."""
    from withcache import fetch  # requests: only for a process that downloads

    if not lim.any:
        return dataclasses.replace(base, max_size=lim.max_size or base.max_size)

    def make_room(n: int) -> None:
        keys = listed() if callable(listed) else listed
        try:
            ensure_room(layout, n, lim, listed=keys, budget_binds=binds, reason="room")
        except NoRoom as exc:
            raise fetch.FetchFailed(f"refused: {exc.why}") from None

    return dataclasses.replace(
        base,
        min_free=lim.min_free,
        max_size=lim.max_size or base.max_size,
        make_room=make_room,
    )


# --- keeping the budget while the watcher runs ---------------------------------------------


class Keeper:
    """enforce() at most every `every` seconds: the watcher's upkeep, which also catches
    bytes added by writers that do not evict themselves."""

    def __init__(
        self,
        layout: Layout,
        lim: Limits,
        listed: Callable[[], Collection[str]],
        *,
        every: float = 60.0,
        say: Callable[[str], None] = lambda _m: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.layout = layout
        self.lim = lim
        self.listed = listed
        self.every = every
        self.say = say
        self.clock = clock
        self._next = 0.0
        self.what = "disk budget"

    def __call__(self, final: bool = False) -> None:
        now = self.clock()
        if now < self._next or not self.lim.any:
            return
        self._next = now + self.every
        done = enforce(self.layout, self.lim, self.listed())
        for e in done.evicted:
            self.say(f"evicted {e.url} ({human(e.size)}): over the store's budget")
        if done.over:
            self.say(f"listed artifacts alone are {human(done.over)} over the store's budget")


# --- what the store holds: `withcache du` ----------------------------------------------------


@dataclass(frozen=True)
class SourceUsage:
    source: str
    artifacts: int
    bytes: int
    evictable: int  # bytes of these that may be evicted


@dataclass(frozen=True)
class Usage:
    """Bytes by source, the evictable part, free space, the limits."""

    sources: list[SourceUsage]
    disk: Disk
    lim: Limits
    evictions: int
    evicted_bytes: int

    @property
    def total(self) -> int:
        return sum(s.bytes for s in self.sources)

    @property
    def artifacts(self) -> int:
        return sum(s.artifacts for s in self.sources)

    @property
    def evictable(self) -> int:
        return sum(s.evictable for s in self.sources)


def usage(layout: Layout, lim: Limits, listed: Collection[str] = ()) -> Usage:
    """What `withcache du` shows (and the metrics export)."""
    with contextlib.closing(store.connect(layout.db)) as conn:
        by: dict[str, list[int]] = {}
        for source, n, size in conn.execute(
            "SELECT source, count(*), coalesce(sum(size), 0) FROM artifacts GROUP BY source"
        ):
            by[source] = [n, size, 0]
        for c in candidates(conn, listed):
            by[c.source][2] += c.size
        counts = store.counters(conn)
    sources = [SourceUsage(s, v[0], v[1], v[2]) for s, v in sorted(by.items())]
    return Usage(
        sources,
        disk(layout),
        lim,
        counts.get("evictions", 0),
        counts.get("evicted_bytes", 0),
    )


def recent_evictions(conn: sqlite3.Connection, since: float | None) -> list[sqlite3.Row]:
    """Evictions after `since` (all with None), newest first (for the report)."""
    return list(
        conn.execute(
            "SELECT url, size, source, last_used, at, reason FROM evictions "
            "WHERE at > ? ORDER BY at DESC, id DESC",
            (since or 0,),
        )
    )
