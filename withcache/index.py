"""Render www/index.html (for people) and www/catalog.json (for scripts).

Both are written atomically, so nginx never serves half a page. The HTML is
autoescaped: miss URLs come from whoever sends a request, so they are hostile.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jinja2

from withcache import __version__, atomic, keys, role, store
from withcache.fmt import human, iso_or_none, json_text, visible, when
from withcache.indexes import audit
from withcache.indexes import model as index_model
from withcache.layout import Layout
from withcache.mirrors import tree as mirror_tree
from withcache.misses import listing as open_misses

_CODE = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


@dataclass(frozen=True)
class Row:
    """One artifact as the index shows it."""

    name: str
    url: str
    cache_path: str
    size: int
    sha256: str
    fetched_at: float
    source: str
    hits: int = 0
    last_hit: float | None = None
    mirror_path: str | None = None  # also served at /m/<name>/<path>
    served_by: str | None = None  # the mirror source its bytes came from


def _shown(value: object) -> object:
    """Every string a page prints goes through visible(): escaping stops markup, this
    stops NUL, ESC and bidi overrides from spoofing what the reader sees."""
    return visible(value) if isinstance(value, str) else value


def html_env() -> jinja2.Environment:
    """Autoescaped: URLs and user agents in misses are whatever a client sent."""
    import jinja2  # only what renders pages pays for importing it

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("withcache", "templates"),
        # compiling the templates took ~0.3 s of every sync that re-renders the index
        # keyed by this module's text: compiled code depends on the options set here
        bytecode_cache=jinja2.FileSystemBytecodeCache(pattern=f"__withcache_{_CODE}_%s.cache"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_shown,
    )
    env.filters["human"] = human
    env.filters["when"] = when
    return env


def gather(
    conn: sqlite3.Connection,
    www: Path | None = None,
    shown_indexes: dict[str, index_model.Index] | None = None,
) -> tuple[list[Row], list[dict[str, Any]]]:
    """Artifacts with their hit counts, and open misses, most requested first
    (a missing Python project counts as found once www/simple/ has its page).
    Files uploaded to a private index show only when anyone may read that index."""
    shown_indexes = shown_indexes or {}
    hits = {
        r["key"]: (r["count"], r["last_hit"])
        for r in conn.execute("SELECT key, count, last_hit FROM hits")
    }
    mirrored = {r.key: r for r in mirror_tree.rows(conn)}
    rows = []
    for a in store.artifacts(conn).values():
        count, last = hits.get(a.key, (0, None))
        path = keys.cache_path(a.key)
        if a.source == index_model.SOURCE:
            ix = shown_indexes.get(audit.index_of_key(a.key) or "")
            if ix is None:
                continue
            path = audit.file_href(ix, a.key, a.name)
        m = mirrored.get(a.key)
        rows.append(
            Row(
                a.name,
                a.url,
                path,
                a.size,
                a.sha256,
                a.fetched_at,
                a.source,
                count,
                last,
                m.ref.uri if m else None,
                m.served_by if m else None,
            )
        )
    rows.sort(key=lambda r: (r.name.lower(), r.url))
    misses = [
        {
            "url": m.url,
            "kind": m.kind,
            "mirror_add": m.mirror_add,
            "count": m.count,
            "clients": m.clients,
            "first_seen": m.first_seen,
            "last_seen": m.last_seen,
        }
        for m in open_misses(conn, www, limit=200)
    ]
    return rows, misses


def on_demand_pending(layout: Layout) -> list[tuple[str, float]]:
    """Python projects taken on demand, not yet in a manifest (flagged like auto-fill),
    with when they were taken."""
    if not (layout.state / "ondemand.json").exists():
        return []
    from withcache.pyindex import demand

    return list(demand.pending(layout).items())


def on_demand(layout: Layout) -> list[dict[str, Any]]:
    return [{"project": p, "taken_at": t} for p, t in on_demand_pending(layout)]


def render(layout: Layout, *, timestamp: bool = True) -> int:
    """Write index.html and catalog.json from the state DB; return the artifact count."""
    role.refuse_writes(layout, "rendering the index")  # not on a replica or an edge
    layout.www.mkdir(parents=True, exist_ok=True)
    conn = store.connect(layout.db)
    try:
        rows, misses = gather(conn, layout.www, audit.public_href(layout))
        uploads = audit.rows(conn, layout, public=True, limit=200)
    finally:
        conn.close()
    taken = on_demand(layout)
    generated = time.time() if timestamp else None
    html = (
        html_env()
        .get_template("index.html")
        .render(
            rows=rows,
            misses=misses,
            total=sum(r.size for r in rows),
            generated=when(generated),
            version=__version__,
            has_report=(layout.www / "report.html").exists(),
            on_demand=taken,
            uploads=uploads,
        )
    )
    atomic.write(layout.www / "index.html", html.encode())
    atomic.write(
        layout.www / "catalog.json", catalog_json(rows, generated, taken, uploads).encode()
    )
    return len(rows)


def _mirror_fields(r: Row) -> dict[str, str]:
    """A mirror file's /m/ path and source, listed only for mirror files."""
    if r.mirror_path is None:
        return {}
    return {"mirror_path": r.mirror_path, "served_by": r.served_by or r.url}


def catalog_json(
    rows: list[Row],
    generated: float | None,
    on_demand: list[dict[str, Any]] | None = None,
    uploads: list[audit.Row] | None = None,
) -> str:
    artifacts: list[dict[str, object]] = [
        {
            "name": r.name,
            "url": r.url,
            "cache_path": r.cache_path,
            "size": r.size,
            "sha256": r.sha256,
            "fetched_at": iso_or_none(r.fetched_at),
            "source": r.source,
            "hits": r.hits,
            "last_hit": iso_or_none(r.last_hit),
        }
        | _mirror_fields(r)
        for r in rows
    ]
    # One artifact per line: diffable, and json's C encoder (not used with indent=)
    # keeps a 100,000-artifact catalog fast.
    head_doc: dict[str, Any] = {"generated": iso_or_none(generated), "count": len(rows)}
    if on_demand:  # "on demand, not yet in a manifest"
        head_doc["python_on_demand"] = [
            {"project": t["project"], "taken_at": iso_or_none(t["taken_at"]), "in_manifest": False}
            for t in on_demand
        ]
    head = json.dumps(head_doc)[:-1]
    body = ",\n ".join(json_text(a) for a in artifacts)
    ups = ",\n ".join(json_text(u.as_json()) for u in uploads or ())
    return f'{head}, "artifacts": [\n {body}\n], "uploads": [\n {ups}\n]}}\n'
