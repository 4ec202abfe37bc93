"""`withcache report`: what is new since the previous report, for cron.

News is a new miss, a sync failure since the previous report, a new auto-filled
artifact, a new Python project taken on demand, or one that failed to be taken.
With no news the report prints nothing (cron mails nothing); with news it
also shows the context: traffic and hit ratio since the previous report, the top
artifacts, disk use. The state ("what the previous report saw") is in the DB and is
advanced in the same transaction that reads it, and only once the output is written.

Misses and user agents are attacker-controlled: text and markdown output neutralise
control and bidi characters, HTML is autoescaped.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from withcache import __version__, atomic, fmt, index, store
from withcache.budget import recent_evictions
from withcache.fmt import human, iso, json_text, visible
from withcache.index import html_env
from withcache.indexes import audit
from withcache.layout import Layout
from withcache.mirrors import traffic as mirror_traffic
from withcache.misses import MissRow, listing
from withcache.pyindex import attempts

FORMATS = ("text", "markdown", "html", "json")
SHOW_NEW = 50
SHOW_AGAIN = 10
SHOW_TOP = 10


@dataclass(frozen=True)
class Failure:
    url: str
    error: str
    at: float


@dataclass(frozen=True)
class AutoFilled:
    url: str
    name: str
    size: int
    fetched_at: float
    new: bool


@dataclass(frozen=True)
class TakenProject:
    """A Python project taken on demand, not yet in a manifest."""

    project: str
    taken_at: float
    new: bool


@dataclass(frozen=True)
class Evicted:
    url: str
    size: int
    source: str
    last_used: float
    at: float


@dataclass(frozen=True)
class Top:
    name: str
    url: str
    hits: int
    bytes: int


@dataclass
class Report:
    """Everything one report says; rendered as text, markdown, HTML or JSON."""

    generated: float
    since: float | None
    where: str
    new_misses: list[MissRow] = field(default_factory=list)
    new_total: int = 0
    again: list[tuple[MissRow, int]] = field(default_factory=list)
    again_total: int = 0
    failures: list[Failure] = field(default_factory=list)
    auto: list[AutoFilled] = field(default_factory=list)
    on_demand: list[TakenProject] = field(default_factory=list)
    on_demand_failed: list[attempts.Attempt] = field(default_factory=list)
    on_demand_counts: dict[str, int] = field(default_factory=dict)  # since the previous report
    evicted: list[Evicted] = field(default_factory=list)  # by the disk budget, newest first
    evicted_total: int = 0
    evicted_bytes: int = 0
    traffic: dict[str, int] = field(default_factory=dict)
    top: list[Top] = field(default_factory=list)
    artifacts: int = 0
    disk_used: int = 0
    disk_free: int | None = None
    watcher_at: float | None = None
    uploads: list[audit.Row] = field(default_factory=list)  # private indexes, since `since`
    # what this report saw, written back by mark() once the report is out
    seen_counters: dict[str, int] = field(default_factory=dict, repr=False)
    seen_hits: list[tuple[str, int, int]] = field(default_factory=list, repr=False)
    seen_misses: list[tuple[int, str]] = field(default_factory=list, repr=False)

    @property
    def news(self) -> bool:
        return bool(
            self.new_total
            or self.failures
            or any(a.new for a in self.auto)
            or any(t.new for t in self.on_demand)
            or self.on_demand_failed
            or self.evicted_total
            or self.uploads
        )

    @property
    def hit_ratio(self) -> float | None:
        hits = self.traffic.get("hits", 0)
        asked = hits + self.traffic.get("misses", 0)
        return hits / asked if asked else None


def build(
    conn: sqlite3.Connection, layout: Layout, manifest_keys: set[str] | None = None
) -> Report:
    """Read what changed since the previous report (call inside one read transaction)."""
    prev = conn.execute("SELECT at, counters FROM reports ORDER BY id DESC LIMIT 1").fetchone()
    since = prev[0] if prev else None
    before: dict[str, int] = json.loads(prev[1]) if prev else {}
    rep = Report(time.time(), since, f"{socket.gethostname()}:{layout.root.resolve()}")

    fresh = listing(conn, layout.www, where="m.reported = 0 AND m.count > 0")
    rep.new_total, rep.new_misses = len(fresh), fresh[:SHOW_NEW]
    again = listing(conn, layout.www, where="m.reported > 0 AND m.count > m.reported")
    rep.again_total = len(again)
    rep.again = [(m, m.count - m.reported) for m in again[:SHOW_AGAIN]]

    rows = conn.execute(
        "SELECT url, error, at FROM sync_failures WHERE at > ? ORDER BY at", (since or 0,)
    )
    rep.failures = [Failure(*r) for r in rows]
    for a in store.artifacts(conn).values():
        rep.artifacts += 1
        rep.disk_used += a.size
        if a.source == "auto" and (manifest_keys is None or a.key not in manifest_keys):
            new = since is None or a.fetched_at > since
            rep.auto.append(AutoFilled(a.url, a.name, a.size, a.fetched_at, new))
    rep.auto.sort(key=lambda a: (-a.fetched_at, a.url))
    rep.on_demand = [
        TakenProject(p, t, since is None or t > since) for p, t in index.on_demand_pending(layout)
    ]
    rep.on_demand_failed = attempts.failures(conn, since or 0.0)
    gone = recent_evictions(conn, since)
    rep.evicted_total, rep.evicted_bytes = len(gone), sum(g["size"] for g in gone)
    rep.evicted = [Evicted(g["url"], g["size"], g["source"], g["last_used"], g["at"]) for g in gone]
    rep.evicted = rep.evicted[:SHOW_NEW]

    now = store.counters(conn)
    rep.traffic = {k: now.get(k, 0) - before.get(k, 0) for k in store.COUNTERS}
    rep.on_demand_counts = {
        k.removeprefix("ondemand_"): now.get(k, 0) - before.get(k, 0)
        for k in sorted(now)
        if k.startswith("ondemand_") and now.get(k, 0) != before.get(k, 0)
    }
    rep.seen_counters = now
    rep.seen_hits = list(conn.execute("SELECT key, count, bytes FROM hits"))
    rep.seen_misses = list(conn.execute("SELECT count, key FROM misses WHERE reported != count"))
    rows = conn.execute(
        "SELECT a.name, a.url, h.count - coalesce(r.count, 0) AS n, "
        "h.bytes - coalesce(r.bytes, 0) FROM hits h JOIN artifacts a ON a.key = h.key "
        "LEFT JOIN report_hits r ON r.key = h.key WHERE n > 0 ORDER BY n DESC, a.name LIMIT ?",
        (SHOW_TOP,),
    )
    rep.top = [Top(*r) for r in rows]
    rep.disk_free = _free(layout)
    rep.watcher_at = conn.execute("SELECT max(updated) FROM log_offsets").fetchone()[0]
    rep.uploads = audit.rows(conn, layout, public=False, since=since)
    return rep


def mark(conn: sqlite3.Connection, rep: Report) -> None:
    """Remember what this report saw, so the next one shows only what is newer.

    Writes the values read by build(), not the current ones: whatever the watcher
    recorded in between is news for the next report.
    """
    with store.transaction(conn):
        conn.execute(
            "INSERT INTO reports (at, counters) VALUES (?, ?)",
            (rep.generated, json.dumps(rep.seen_counters)),
        )
        conn.executemany("UPDATE misses SET reported = ? WHERE key = ?", rep.seen_misses)
        conn.execute("DELETE FROM report_hits")
        conn.executemany("INSERT INTO report_hits VALUES (?, ?, ?)", rep.seen_hits)


def run(
    layout: Layout,
    fmt: str,
    out: TextIO,
    *,
    manifest_keys: set[str] | None = None,
    peek: bool = False,
) -> bool:
    """Print the report if there is news (and write www/report.html for html); True if so.

    The state advances only after the output was written: a report that could not be
    delivered is shown again next time. No lock is held while writing the output, so a
    slow reader of stdout never holds up the watcher.
    """
    conn = store.connect(layout.db)
    try:
        conn.execute("BEGIN")  # one consistent snapshot for every query of the report
        try:
            rep = build(conn, layout, manifest_keys)
        finally:
            conn.execute("COMMIT")
        if not rep.news:
            return False
        if fmt == "html":  # www/report.html is public: no restricted index in it
            shown = audit.public_href(layout)
            rep.uploads = [u for u in rep.uploads if u.index in shown]
        text = render(rep, fmt)
        if fmt == "html":
            layout.www.mkdir(parents=True, exist_ok=True)
            atomic.write(layout.www / "report.html", text.encode())
        out.write(text)
        out.flush()
        if not peek:
            mark(conn, rep)
    finally:
        conn.close()
    if fmt == "html":
        index.render(layout)  # the index links the report once it exists
    return True


def _free(layout: Layout) -> int | None:
    for d in (layout.www, layout.root):
        try:
            vfs = os.statvfs(d)
        except OSError:
            continue
        return vfs.f_bavail * vfs.f_frsize
    return None


# --- rendering ---------------------------------------------------------------------------


def render(rep: Report, fmt: str) -> str:
    if fmt == "json":
        return json_text(as_json(rep), indent=1) + "\n"
    if fmt == "html":
        return html_env().get_template("report.html").render(r=rep, version=__version__)
    if fmt == "markdown":
        return _markdown(rep)
    return _text(rep)


def when(ts: float | None) -> str:
    return fmt.when(ts) or "never"


def _what(m: MissRow) -> str:
    if m.kind == "project":
        return f"Python project {visible(m.url)}  -> requirements: [{visible(m.url)}]"
    if m.kind == mirror_traffic.KIND:
        return visible(mirror_traffic.what(m.url))
    return visible(m.url)


def _traffic_line(rep: Report) -> str:
    t = rep.traffic
    ratio = rep.hit_ratio
    r = f" (hit ratio {ratio:.1%})" if ratio is not None else ""
    return (
        f"{t['hits']:,} hits, {t['misses'] + t['project_misses']:,} misses{r}, "
        f"{human(t['hit_bytes'])} served; {t['invalid']:,} invalid requests, "
        f"{t['garbage']:,} garbage log lines, {t['lines']:,} lines read"
    )


def _failure_text(a: attempts.Attempt) -> str:
    first = visible(a.detail.splitlines()[0] if a.detail else "failed")
    return f"{first} (attempt {a.attempts}, {when(a.at)} UTC; next try {when(a.retry_at)} UTC)"


def _counts_line(counts: dict[str, int]) -> str:
    """taken 3, absent 12, over_rate 980 ... -> words a person reads."""
    words = {
        "taken": "taken",
        "absent": "not on the upstream",
        "failed": "failed",
        "refused": "refused names",
        "outside": "outside on_demand",
        "queue_full": "dropped (queue full)",
        "over_rate": "dropped (over the rate cap)",
        "backoff": "skipped (negative cache or backoff)",
        "refreshes": "refreshes",
    }
    return ", ".join(f"{n:,} {words.get(k, k)}" for k, n in counts.items())


def _evicted_title(rep: Report) -> str:
    return (
        f"Evicted by the disk budget ({rep.evicted_total}, {human(rep.evicted_bytes)}; "
        "unlisted, least recently used first)"
    )


def _upload_line(u: audit.Row) -> str:
    size = f" ({human(u.size)})" if u.size is not None else ""
    where = f" from {u.addr}" if u.addr else ""
    detail = f": {u.detail}" if u.detail else ""
    return visible(f"{u.index}: {u.action} {u.filename}{size} by {u.user}{where}{detail}")


def _disk_line(rep: Report) -> str:
    free = f", {human(rep.disk_free)} free" if rep.disk_free is not None else ""
    return f"{human(rep.disk_used)} in {rep.artifacts} artifacts{free}"


def _text_section(title: str, lines: Iterable[str], closing: Sequence[str] = ()) -> list[str]:
    """A section of the text report: `title:`, its lines indented, `closing` lines, a blank."""
    return [f"{title}:", *(f"  {line}" for line in lines), *closing, ""]


def _text(rep: Report) -> str:
    since = f" (previous report {when(rep.since)} UTC)" if rep.since else " (first report)"
    out = [f"withcache report for {visible(rep.where)}, {when(rep.generated)} UTC{since}", ""]
    if rep.new_total:
        more = rep.new_total - len(rep.new_misses)
        out += _text_section(
            f"New misses ({rep.new_total})",
            [
                f"{'REQUESTS':>8}  {'CLIENTS':>7}  {'LAST SEEN (UTC)':16}  WANTED",
                *(
                    f"{m.count:>8}  {m.clients:>7}  {when(m.last_seen):16}  {_what(m)}"
                    for m in rep.new_misses
                ),
            ],
            [
                *([f"  ... and {more} more"] if more > 0 else []),
                "  Add with `withcache add URL...` (or `withcache misses --yaml`), then a PR.",
            ],
        )
    if rep.again_total:
        out += _text_section(
            f"Older misses requested again ({rep.again_total})",
            (f"{n:>8} more  (total {m.count})  {_what(m)}" for m, n in rep.again),
        )
    if rep.failures:
        out += _text_section(
            f"Failed to sync ({len(rep.failures)})",
            (f"{visible(f.url)}: {visible(f.error)} ({when(f.at)} UTC)" for f in rep.failures),
        )
    if rep.auto:
        out += _text_section(
            f"Auto-filled, not yet in a manifest ({len(rep.auto)})",
            (
                f"{visible(a.url)} ({_new(a.new)}{human(a.size)}, fetched {when(a.fetched_at)})"
                for a in rep.auto
            ),
        )
    if rep.on_demand:
        out += _text_section(
            f"Python projects on demand, not yet in a manifest ({len(rep.on_demand)})",
            (
                f"{visible(t.project)} ({_new(t.new)}taken {when(t.taken_at)})"
                for t in rep.on_demand
            ),
            ["  Keep one with `withcache add --python NAME`, then a PR."],
        )
    if rep.on_demand_failed:
        out += _text_section(
            f"Python projects that could not be taken on demand ({len(rep.on_demand_failed)})",
            (f"{visible(a.project)}: {_failure_text(a)}" for a in rep.on_demand_failed),
        )
    if rep.on_demand_counts:
        out.append("On demand since the previous report: " + _counts_line(rep.on_demand_counts))
    if rep.evicted_total:
        out += _text_section(_evicted_title(rep), map(_evicted_line, rep.evicted))
    if rep.uploads:
        more = len(rep.uploads) - SHOW_NEW
        out += _text_section(
            f"Uploads to the private indexes ({len(rep.uploads)})",
            (f"{when(u.at)}  {_upload_line(u)}" for u in rep.uploads[:SHOW_NEW]),
            [f"  ... and {more} more"] if more > 0 else [],
        )
    out.append("Since the previous report: " + _traffic_line(rep))
    if rep.top:
        out.append("Top artifacts:")
        for t in rep.top:
            out.append(f"  {t.hits:>8} hits  {human(t.bytes):>10}  {visible(t.name)}")
    out.append("Disk: " + _disk_line(rep))
    out.append(f"Watcher: last read the log {when(rep.watcher_at)} UTC")
    return "\n".join(out) + "\n"


def _new(new: bool) -> str:
    return "new, " if new else ""


def _evicted_line(e: Evicted, show: Callable[[str], str] = visible) -> str:
    return f"{show(e.url)} ({human(e.size)}, last used {when(e.last_used)})"


def _code(s: str) -> str:
    """A markdown code span that nothing inside can break out of (tables included)."""
    s = visible(s).replace("|", "\\|")
    run = longest = 0
    for c in s:
        run = run + 1 if c == "`" else 0
        longest = max(longest, run)
    fence = "`" * (longest + 1)
    pad = " " if s.startswith("`") or s.endswith("`") or not s else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def _md_section(title: str, items: Iterable[str], closing: Sequence[str] = ("",)) -> list[str]:
    """A section of the markdown report: a heading, a bullet an item, `closing` lines."""
    return [f"### {title}", "", *(f"- {item}" for item in items), *closing]


def _markdown(rep: Report) -> str:
    since = f"previous report {when(rep.since)} UTC" if rep.since else "first report"
    out = [
        f"## withcache report, {when(rep.generated)} UTC",
        "",
        f"{_code(rep.where)}, {since}",
        "",
    ]
    if rep.new_total:
        out += [f"### New misses ({rep.new_total})", ""]
        out += ["| Requests | Clients | Last seen (UTC) | Wanted |", "|---:|---:|---|---|"]
        for m in rep.new_misses:
            what = (
                f"Python project {_code(m.url)}: add {_code(f'requirements: [{m.url}]')}"
                if m.kind == "project"
                else _code(m.url)
            )
            if m.mirror_add:
                what += f": add with {_code(m.mirror_add)}"
            out.append(f"| {m.count} | {m.clients} | {when(m.last_seen)} | {what} |")
        if rep.new_total > len(rep.new_misses):
            out.append(f"\n... and {rep.new_total - len(rep.new_misses)} more")
        out += ["", "Add with `withcache add URL...` (or `withcache misses --yaml`).", ""]
    if rep.again_total:
        out += _md_section(
            f"Older misses requested again ({rep.again_total})",
            (f"{n} more (total {m.count}): {_code(m.url)}" for m, n in rep.again),
        )
    if rep.failures:
        out += _md_section(
            f"Failed to sync ({len(rep.failures)})",
            (f"{_code(f.url)}: {_code(f.error)} ({when(f.at)} UTC)" for f in rep.failures),
        )
    if rep.auto:
        out += _md_section(
            f"Auto-filled, not yet in a manifest ({len(rep.auto)})",
            (f"{_code(a.url)} ({_new(a.new)}{human(a.size)})" for a in rep.auto),
        )
    if rep.on_demand:
        out += _md_section(
            f"Python projects on demand, not yet in a manifest ({len(rep.on_demand)})",
            (
                f"{_code(t.project)} ({_new(t.new)}taken {when(t.taken_at)} UTC)"
                for t in rep.on_demand
            ),
            ["", "Keep one with `withcache add --python NAME`, then a PR.", ""],
        )
    if rep.on_demand_failed:
        out += _md_section(
            f"Could not be taken on demand ({len(rep.on_demand_failed)})",
            (f"{_code(a.project)}: {_code(_failure_text(a))}" for a in rep.on_demand_failed),
            [],
        )
    if rep.uploads:
        out += _md_section(
            f"Uploads to the private indexes ({len(rep.uploads)})",
            (f"{when(u.at)} {_code(_upload_line(u))}" for u in rep.uploads[:SHOW_NEW]),
        )
    if rep.evicted_total:
        out += _md_section(_evicted_title(rep), (_evicted_line(e, _code) for e in rep.evicted))
    out += ["### Traffic", "", "Since the previous report: " + _traffic_line(rep), ""]
    if rep.on_demand_counts:
        out += ["On demand: " + _counts_line(rep.on_demand_counts), ""]
    if rep.top:
        out += ["| Hits | Served | Artifact |", "|---:|---:|---|"]
        out += [f"| {t.hits} | {human(t.bytes)} | {_code(t.name)} |" for t in rep.top]
        out.append("")
    out.append("Disk: " + _disk_line(rep) + "  ")
    out.append(f"Watcher: last read the log {when(rep.watcher_at)} UTC")
    return "\n".join(out) + "\n"


def as_json(rep: Report) -> dict[str, Any]:
    return {
        "generated": iso(rep.generated),
        "since": iso(rep.since) if rep.since else None,
        "where": rep.where,
        "news": rep.news,
        "new_misses": [m.as_json() for m in rep.new_misses],
        "new_misses_total": rep.new_total,
        "requested_again": [dict(m.as_json(), new_requests=n) for m, n in rep.again],
        "requested_again_total": rep.again_total,
        "sync_failures": [dict(asdict(f), at=iso(f.at)) for f in rep.failures],
        "auto_filled_not_in_manifest": [
            dict(asdict(a), fetched_at=iso(a.fetched_at)) for a in rep.auto
        ],
        "python_on_demand_not_in_manifest": [
            {"project": t.project, "taken_at": iso(t.taken_at), "new": t.new} for t in rep.on_demand
        ],
        "python_on_demand_failed": [
            {
                "project": a.project,
                "error": a.detail,
                "attempts": a.attempts,
                "at": iso(a.at),
                "retry_at": iso(a.retry_at),
            }
            for a in rep.on_demand_failed
        ],
        "python_on_demand_counts": rep.on_demand_counts,
        "evicted": [dict(asdict(e), last_used=iso(e.last_used), at=iso(e.at)) for e in rep.evicted],
        "evicted_total": rep.evicted_total,
        "evicted_bytes": rep.evicted_bytes,
        "traffic": dict(rep.traffic, hit_ratio=rep.hit_ratio),
        "top_artifacts": [asdict(t) for t in rep.top],
        "disk": {"artifacts": rep.artifacts, "used": rep.disk_used, "free": rep.disk_free},
        "watcher_last_read": iso(rep.watcher_at) if rep.watcher_at else None,
        "uploads": [u.as_json() for u in rep.uploads],
    }


def manifest_keys(paths: list[Path]) -> set[str] | None:
    """Keys the manifests list (to tell auto-filled artifacts not yet committed), or None."""
    from withcache import manifest

    existing = [p for p in paths if p.exists()]
    if not existing:
        return None
    return manifest.load(existing).listed_keys()
