"""Prometheus metrics as a static file: www/metrics, which nginx serves at /metrics.

No exporter process: the watcher (every few seconds while it runs) and sync (at its
end) render the whole exposition from the state DB and the disk, and write it
atomically, so a scrape always reads one complete file. The same text can go into
node_exporter's textfile-collector directory. Counters come from the watcher's
running totals, which survive restarts (they live in the DB), so they only go up.

Text exposition format 0.0.4; tests read it back with prometheus_client's parser.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from withcache import atomic, budget, history, store
from withcache.layout import Layout

FILE = "metrics"  # under www/
TEXTFILE = "withcache.prom"  # in a node_exporter textfile-collector directory

Labels = tuple[tuple[str, str], ...]


@dataclass
class Family:
    """One metric: its samples share a name, a type and a help text."""

    name: str
    kind: str  # counter | gauge
    help: str
    samples: list[tuple[Labels, float]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> Family:
        self.samples.append((tuple(labels.items()), value))
        return self


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(v: float) -> str:
    if v == int(v) and abs(v) < 1 << 53:
        return str(int(v))
    return repr(float(v))


def render(families: Iterable[Family]) -> str:
    """The text exposition format: HELP, TYPE, then one line per sample."""
    out: list[str] = []
    for f in families:
        if not f.samples:
            continue
        out.append(f"# HELP {f.name} {f.help}")
        out.append(f"# TYPE {f.name} {f.kind}")
        for labels, value in f.samples:
            inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            name = f"{f.name}{{{inner}}}" if inner else f.name
            out.append(f"{name} {_number(value)}")
    return "\n".join(out) + "\n"


def collect(
    layout: Layout, lim: budget.Limits | None = None, listed: Collection[str] = ()
) -> list[Family]:
    """Every metric, read from the state DB, the disk and the access logs."""
    lim = lim or budget.Limits()
    use = budget.usage(layout, lim, listed)
    with contextlib.closing(store.connect(layout.db)) as conn:
        counts = store.counters(conn)
        last = history.last(conn)
        last_ok = history.last(conn, ok=True)
        failing = conn.execute("SELECT count(*) FROM sync_failures").fetchone()[0]
        logs = list(conn.execute("SELECT log, inode, offset, updated FROM log_offsets"))
    fams: list[Family] = []

    def metric(name: str, kind: str, text: str) -> Family:
        fams.append(Family("withcache_" + name, kind, text))
        return fams[-1]

    def by_area(name: str, text: str, both: str, m: str, simple: str) -> None:
        """/b/ and /m/ are counted together (`both`) with /m/'s share apart (`m`)."""
        f = metric(name, "counter", text)
        mirrored = counts.get(m, 0)
        f.add(counts.get(both, 0) - mirrored, area="b").add(mirrored, area="m")
        f.add(counts.get(simple, 0), area="simple")

    by_area(
        "hits_total",
        "Requests answered from the tree (GET 200/206).",
        "hits",
        "m_hits",
        "page_hits",
    )
    by_area(
        "misses_total",
        "Requests the tree could not answer (404).",
        "misses",
        "m_misses",
        "project_misses",
    )
    by_area(
        "served_bytes_total", "Body bytes sent for hits.", "hit_bytes", "m_hit_bytes", "page_bytes"
    )
    for name, key, text in (
        ("log_lines_total", "lines", "Access-log lines the watcher read."),
        ("invalid_requests_total", "invalid", "Requests naming no URL or project."),
        ("garbage_log_lines_total", "garbage", "Log lines that were not nginx's JSON."),
        ("evictions_total", "evictions", "Artifacts evicted by the disk budget."),
        ("evicted_bytes_total", "evicted_bytes", "Bytes evicted by the disk budget."),
    ):
        metric(name, "counter", text).add(counts.get(key, 0))

    artifacts = metric("artifacts", "gauge", "Artifacts stored, by source.")
    stored = metric("stored_bytes", "gauge", "Bytes stored, by source.")
    evictable = metric("evictable_bytes", "gauge", "Stored bytes the budget may evict, by source.")
    for s in use.sources:
        artifacts.add(s.artifacts, source=s.source)
        stored.add(s.bytes, source=s.source)
        evictable.add(s.evictable, source=s.source)
    metric("filesystem_free_bytes", "gauge", "Free bytes on the data dir's filesystem.").add(
        use.disk.free
    )
    metric("filesystem_size_bytes", "gauge", "Size of the data dir's filesystem.").add(
        use.disk.size
    )
    metric("min_free_bytes", "gauge", "The store's min_free (0: not set).").add(lim.min_free)
    if lim.budget is not None:
        metric("budget_bytes", "gauge", "The store's budget.").add(lim.budget)
    metric("sync_failing_artifacts", "gauge", "Artifacts whose last download failed.").add(failing)
    if last is not None:
        metric("last_sync_timestamp_seconds", "gauge", "When the last sync ended.").add(
            last.finished
        )
        metric("last_sync_duration_seconds", "gauge", "How long the last sync took.").add(
            round(last.seconds, 3)
        )
        metric("last_sync_success", "gauge", "1 if the last sync failed nothing, else 0.").add(
            int(last.ok)
        )
        metric("last_sync_failures", "gauge", "Downloads the last sync failed.").add(last.failed)
        metric("last_sync_fetched", "gauge", "Artifacts the last sync fetched.").add(last.fetched)
    if last_ok is not None:
        metric(
            "last_successful_sync_timestamp_seconds", "gauge", "When a sync last failed nothing."
        ).add(last_ok.finished)
    fams += _watcher(logs)
    metric("metrics_timestamp_seconds", "gauge", "When this file was written.").add(
        round(time.time(), 3)
    )
    return fams


def _watcher(logs: list[tuple[str, int, int, float]]) -> list[Family]:
    """Lag per followed log: bytes not yet read, and for how long they have waited."""
    p = "withcache_"
    lag_bytes = Family(f"{p}watcher_lag_bytes", "gauge", "Access-log bytes not yet read.")
    lag_seconds = Family(
        f"{p}watcher_lag_seconds",
        "gauge",
        "How long the oldest unread log bytes have waited (0 when caught up).",
    )
    read_at = Family(
        f"{p}watcher_last_commit_timestamp_seconds", "gauge", "When the watcher last committed."
    )
    for log, inode, offset, updated in logs:
        try:
            st = os.stat(log)
        except OSError:
            continue
        behind = st.st_size - offset if st.st_ino == inode else st.st_size
        behind = max(0, behind)
        lag_bytes.add(behind, log=log)
        lag_seconds.add(round(max(0.0, st.st_mtime - updated), 3) if behind else 0, log=log)
        read_at.add(round(updated, 3), log=log)
    return [lag_bytes, lag_seconds, read_at]


def write(
    layout: Layout,
    lim: budget.Limits | None = None,
    listed: Collection[str] = (),
    textfile_dir: Path | None = None,
) -> str:
    """Render and write www/metrics (and DIR/withcache.prom), each atomically."""
    text = render(collect(layout, lim, listed))
    data = text.encode()
    layout.www.mkdir(parents=True, exist_ok=True)
    atomic.write(layout.www / FILE, data)
    if textfile_dir is not None:
        atomic.write(textfile_dir / TEXTFILE, data)
    return text


class Writer:
    """write() at most every `every` seconds, and once more at the end: the watcher's
    upkeep. `listed` is asked each time (the manifests may have changed)."""

    def __init__(
        self,
        layout: Layout,
        lim: budget.Limits | None,
        listed: Callable[[], Collection[str]] = lambda: (),
        *,
        every: float = 15.0,
        textfile_dir: Path | None = None,
    ) -> None:
        self.layout = layout
        self.lim = lim
        self.listed = listed
        self.every = every
        self.textfile_dir = textfile_dir
        self._next = 0.0
        self.what = "metrics"

    def __call__(self, final: bool = False) -> None:
        now = time.monotonic()
        if now < self._next and not final:
            return
        self._next = now + self.every
        write(self.layout, self.lim, self.listed(), self.textfile_dir)
