"""Misses awaiting review: what people asked the cache for and did not get.

A miss leaves the list once its key is in the tree (a manifest entry was synced,
or auto-fill fetched it), or for a Python project once the index has its page,
or for good when an operator dismisses it.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from withcache import keys, manifest
from withcache.accesslog import PROJECT_PREFIX, pep503
from withcache.fmt import iso, parse_duration
from withcache.mirrors import traffic as mirror_traffic
from withcache.mirrors.paths import MISS_PREFIX, from_miss_key

OPEN, CACHED, DISMISSED = "open", "cached", "dismissed"
_PLAIN_URL = re.compile(r"^https?://[A-Za-z0-9._~:/?&=%+@!$()*,;-]+$")
_PROJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class MissRow:
    """One missed URL or Python project, with what a reviewer needs to decide."""

    key: str
    url: str  # the URL as requested, or the project name
    kind: str  # "url" | "project" | "mirror" (url is then /m/<name>/<path>)
    count: int
    first_seen: float
    last_seen: float
    clients: int
    last_ua: str
    status: str  # open | cached | dismissed
    reported: int = 0  # count at the last report

    @property
    def requirement(self) -> str | None:
        """For a missing project: the line to paste under python.requirements."""
        return self.url if self.kind == "project" else None

    @property
    def mirror_add(self) -> str | None:
        """For a mirror path miss: the command that adds it to its mirror's files."""
        return mirror_traffic.add_command(self.url) if self.kind == mirror_traffic.KIND else None

    def as_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "key": self.key,
            "kind": self.kind,
            "count": self.count,
            "first_seen": iso(self.first_seen),
            "last_seen": iso(self.last_seen),
            "clients": self.clients,
            "last_ua": self.last_ua,
            "status": self.status,
            "requirement": self.requirement,
        }


def listing(
    conn: sqlite3.Connection,
    www: Path | None = None,
    *,
    everything: bool = False,
    limit: int | None = None,
    where: str = "",
    params: tuple[Any, ...] = (),
) -> list[MissRow]:
    """Misses, most requested first: open ones only unless `everything`."""
    sql = (
        "SELECT m.key, m.url, m.kind, m.count, m.first_seen, m.last_seen, m.clients, "
        "coalesce(m.last_ua, ''), m.dismissed, a.key IS NOT NULL, m.reported "
        "FROM misses m LEFT JOIN artifacts a ON a.key = m.key "
    )
    conds = [] if everything else ["m.dismissed = 0", "a.key IS NULL"]
    if where:
        conds.append(where)
    if conds:
        sql += "WHERE " + " AND ".join(conds) + " "
    sql += "ORDER BY m.count DESC, m.last_seen DESC, m.key"
    out = []
    for r in conn.execute(sql, params):
        kind = r[2]
        cached = (
            bool(r[9])
            or (kind == "project" and _has_project_page(www, r[1]))
            or (kind == mirror_traffic.KIND and mirror_traffic.is_held(www, r[1]))
        )
        status = DISMISSED if r[8] else CACHED if cached else OPEN
        if status != OPEN and not everything:
            continue
        out.append(MissRow(r[0], r[1], kind, r[3], r[4], r[5], r[6], r[7], status, r[10]))
        if limit is not None and len(out) >= limit:
            break
    return out


parse_age = parse_duration  # `misses --since 7d`


def _has_project_page(www: Path | None, project: str) -> bool:
    return www is not None and (www / "simple" / project).is_dir()


def target_key(text: str) -> str:
    """The misses.key an operator means: an origin URL, a Python project name, or a
    mirror path (mirror:<name>/<path> or /m/<name>/<path>)."""
    mirror_key = mirror_traffic.target_key(text)
    if mirror_key is not None:
        return mirror_key
    if text.startswith(PROJECT_PREFIX):
        text = text[len(PROJECT_PREFIX) :]
        if not _PROJECT.match(text):
            raise ValueError(f"not a Python project name: {text!r}")
        return PROJECT_PREFIX + pep503(text)
    if "://" not in text and _PROJECT.match(text):
        return PROJECT_PREFIX + pep503(text)
    return keys.normalize(text)


def dismiss(conn: sqlite3.Connection, targets: Iterable[str]) -> list[tuple[str, bool]]:
    """Hide misses for good; a target not seen yet is hidden in advance.

    Returns (key, was it seen) for each target; raises ValueError for a target that is
    neither an http(s) URL nor a project name (nothing is changed then).
    """
    wanted = []
    for t in targets:
        try:
            wanted.append(target_key(t))
        except keys.NotCacheable as exc:
            raise ValueError(f"{t}: {exc}") from None
    out = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for key in wanted:
            seen = conn.execute("SELECT 1 FROM misses WHERE key = ?", (key,)).fetchone()
            if seen:
                conn.execute("UPDATE misses SET dismissed = 1 WHERE key = ?", (key,))
            else:
                kind = "project" if key.startswith(PROJECT_PREFIX) else "url"
                url = key[len(PROJECT_PREFIX) :] if kind == "project" else key
                ref = from_miss_key(key) if key.startswith(MISS_PREFIX) else None
                if ref is not None:
                    kind, url = mirror_traffic.KIND, ref.uri
                conn.execute(
                    "INSERT INTO misses (key, url, kind, count, first_seen, last_seen, "
                    "dismissed) VALUES (?, ?, ?, 0, 0, 0, 1)",
                    (key, url, kind),
                )
            out.append((key, bool(seen)))
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return out


def yaml_scalar(url: str) -> str:
    """A URL as a YAML scalar: plain when safe, else double-quoted (JSON is valid YAML)."""
    if _PLAIN_URL.match(url) and " #" not in url:
        return url
    return json.dumps(url)


def snippet(rows: list[MissRow]) -> str:
    """A ready-to-paste manifest fragment for these misses."""
    urls = [r for r in rows if r.kind == "url"]
    projects = [r for r in rows if r.kind == "project"]
    out = ["# withcache misses: paste into a manifest (manifests/*.yaml), then open a PR"]
    if urls:
        out.append("artifacts:")
        for r in urls:
            note = f"{r.count} requests, last {iso(r.last_seen)}"
            problem = manifest.url_problem(r.url)
            if problem:
                out.append(f"  # not addable: {json.dumps(r.url)}: {problem}")
            else:
                out.append(f"  - {yaml_scalar(r.url)}  # {note}")
    out += mirror_traffic.snippet(
        (r.url, f"{r.count} requests, last {iso(r.last_seen)}")
        for r in rows
        if r.kind == mirror_traffic.KIND
    )
    if projects:
        names = ", ".join(r.url for r in projects)
        out.append("python:  # merge into your python: section")
        out.append(f"  requirements: [{names}]")
    return "\n".join(out) + "\n"
