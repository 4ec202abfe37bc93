"""Revalidate the upstream pages of the projects taken on demand: conditional requests.

Every project the on-demand record lists (the roots and their dependencies) gets one
GET carrying the validators its upstream gave last time (If-None-Match,
If-Modified-Since). A 304 is the end of it: nothing is read, parsed or written. So is a
200 with the very bytes seen last time (an upstream without validators). A page that
did change is parsed: yanks are copied onto the files the index lists, and a version
newer than any the index holds has every root that depends on the project resolved
again, so a new release that satisfies the constraints is fetched (earlier files stay
listed). Only the pages that changed are written. `withcache sync --refresh` and the
watcher (`python.refresh`) both run this.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from packaging.version import InvalidVersion, Version

from withcache import store
from withcache.layout import Layout
from withcache.pyindex import attempts, demand, pages, publish, take, validators, wheelhouse
from withcache.pyindex.config import PythonConfig
from withcache.pyindex.model import IndexFile, Listed

JOBS = 8


@dataclass
class Refreshed:
    """What one refresh found."""

    checked: int = 0
    unchanged: int = 0  # 304, or the same bytes
    read: int = 0  # changed (or first seen): parsed
    yanks: int = 0  # files whose yank status changed
    resolved: list[str] = field(default_factory=list)  # roots resolved again
    new_files: int = 0
    failed: list[str] = field(default_factory=list)
    written: set[str] = field(default_factory=set)  # project pages written

    def line(self) -> str:
        return (
            f"{self.checked} upstream pages revalidated: {self.unchanged} unchanged, "
            f"{self.read} read, {self.yanks} yanks, {len(self.resolved)} resolved again "
            f"({self.new_files} files fetched), {len(self.failed)} failed"
        )


def config_for(t: demand.Taken, configs: Sequence[PythonConfig]) -> PythonConfig | None:
    """The python: section a root was taken under (the same one if it still exists)."""
    admitting = [c for c in configs if c.takes(t.project)]
    same = [c for c in admitting if c.where == t.where and c.index == t.index]
    found = same or admitting
    return found[0] if found else None


def _version(filename: str) -> Version | None:
    nv = wheelhouse.name_version(filename)
    if nv is None:
        return None
    try:
        return Version(nv[1])
    except InvalidVersion:
        return None


def newest(versions: list[Version | None]) -> Version | None:
    real = [v for v in versions if v is not None]
    return max(real) if real else None


def has_newer(listing: list[Listed], held: list[IndexFile]) -> bool:
    """Does the page offer a (not yanked) version newer than every one the index holds?"""
    offered = newest([_version(f.filename) for f in listing if f.yanked is False])
    mine = newest([_version(f.filename) for f in held])
    return offered is not None and (mine is None or offered > mine)


def with_yanks(files: list[IndexFile], listing: list[Listed]) -> tuple[list[IndexFile], int]:
    """The files with their yank status as the page now says; and how many changed."""
    yanked = {f.filename: f.yanked for f in listing}
    out, changed = [], 0
    for f in files:
        now = yanked.get(f.filename, f.yanked)
        if now != f.yanked:
            f = replace(f, yanked=now)
            changed += 1
        out.append(f)
    return out, changed


def run(
    layout: Layout,
    configs: Sequence[PythonConfig],
    uv_cache: Path,
    *,
    say: Callable[[str], None] = lambda _msg: None,
    settings: take.Settings | None = None,
) -> Refreshed:
    """Revalidate every project taken on demand; fetch and publish what changed."""
    out = Refreshed()
    record = demand.load(layout)
    settings = settings or take.Settings(uv_cache)
    index_of: dict[str, str] = {}
    for t in record.taken.values():
        if config_for(t, configs) is not None:
            for p in sorted(t.projects()):
                index_of.setdefault(p, t.index)
    if not index_of:
        return out
    urls = {p: pages.project_url(index, p) for p, index in index_of.items()}
    conn = store.connect(layout.db)
    try:
        known = validators.load(conn, list(urls.values()))
        answers = _revalidate(index_of, urls, known, settings, out)
        validators.remember(conn, [(urls[p], page) for p, page in answers.items()])
    finally:
        conn.close()
    changed: dict[str, list[Listed]] = {}
    for p, page in answers.items():
        before = known.get(urls[p])
        if page.status != 200 or (before and before.digest == validators.digest(page.body)):
            out.unchanged += 1
            continue
        try:
            changed[p] = page.files()
        except pages.UpstreamError as exc:
            out.failed.append(str(exc))
            continue
        out.read += 1
    if not changed:
        return out
    again = _apply_yanks(layout, changed, out)
    for name in sorted(again):
        t = record.taken[name]
        cfg = config_for(t, configs)
        if cfg is None:
            continue
        first = answers.get(name)
        result = take.take(layout, cfg, name, settings, say=say, first=first, refresh=True)
        out.resolved.append(name)
        out.new_files += result.fetched
        out.written.update(result.published)
        if result.status != attempts.TAKEN:
            out.failed.append(result.detail)
    return out


def _revalidate(
    index_of: dict[str, str],
    urls: dict[str, str],
    known: dict[str, validators.Known],
    settings: take.Settings,
    out: Refreshed,
) -> dict[str, pages.Page]:
    """One conditional GET per project, a few at once."""
    timeout = (settings.policy.connect_timeout, settings.policy.read_timeout)
    session = pages.new_session(JOBS)

    def one(project: str) -> tuple[str, pages.Page | str]:
        k = known.get(urls[project])
        try:
            page = pages.get_page(
                session,
                index_of[project],
                project,
                etag=k.etag if k else None,
                last_modified=k.last_modified if k else None,
                timeout=timeout,
                attempts=settings.policy.attempts,
            )
        except pages.UpstreamError as exc:
            return project, str(exc)
        return project, page

    answers: dict[str, pages.Page] = {}
    with session, ThreadPoolExecutor(JOBS, "pyindex-refresh") as pool:
        for project, page in pool.map(one, sorted(index_of)):
            out.checked += 1
            if isinstance(page, str):
                out.failed.append(page)
            elif page.status == 404:
                out.failed.append(f"{page.url}: HTTP 404: the project left the upstream")
            else:
                answers[project] = page
    return answers


def _apply_yanks(layout: Layout, changed: dict[str, list[Listed]], out: Refreshed) -> set[str]:
    """Copy yanks onto the record and write the pages they change (under the index
    lock); return the roots to resolve again for a newer version."""
    again: set[str] = set()
    with publish.held(layout):
        record = demand.load(layout)
        dirty: set[str] = set()
        for name, t in record.taken.items():
            files = t.files
            for project, listing in changed.items():
                mine = [f for f in files if f.project == project]
                if not mine:
                    continue
                updated, n = with_yanks(mine, listing)
                if n:
                    out.yanks += n
                    dirty.add(project)
                    others = [f for f in files if f.project != project]
                    files = sorted([*others, *updated], key=lambda f: (f.project, f.filename))
                if has_newer(listing, mine):
                    again.add(name)
            if files is not t.files:
                record.taken[name] = replace(t, files=files, refreshed_at=time.time())
        if dirty:
            demand.save(layout, record)
            out.written.update(publish.render_projects(layout, dirty))
    return again
