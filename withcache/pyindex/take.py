"""Take one missed project from the upstream: resolve, fetch verified, record, publish.

What sync does for a requirement, for one project name: its page is read first (a name
the upstream does not know costs that one request and nothing else), then the resolver
sync uses (uv, per target of the python: section) picks the newest version every
target can install plus its dependencies, the same selection picks the files, sync's
downloads fetch them verified against the upstream's sha256 and place them, and only
the pages of the projects involved and the root are written, under the index lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from withcache import fetch, store, tree
from withcache.downloads import Downloads
from withcache.layout import Layout
from withcache.manifest import Manifest
from withcache.plan import plan
from withcache.progress import Progress
from withcache.pyindex import build, demand, pages, publish, validators
from withcache.pyindex.attempts import ABSENT, FAILED, TAKEN
from withcache.pyindex.config import PythonConfig
from withcache.pyindex.model import IndexFile, IndexPlan, Listed


@dataclass(frozen=True)
class Outcome:
    """What taking (or re-resolving) one project came to."""

    project: str
    status: str  # taken | absent | failed
    detail: str = ""
    published: tuple[str, ...] = ()  # the projects whose pages were written
    fetched: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class Settings:
    """How a take talks to the upstream and where uv keeps its cache."""

    uv_cache: Path
    policy: fetch.Policy = field(default_factory=lambda: fetch.Policy(attempts=2, backoff=0.5))
    jobs: int = 4


def take(
    layout: Layout,
    cfg: PythonConfig,
    project: str,
    settings: Settings,
    *,
    say: Callable[[str], None] = lambda _msg: None,
    first: pages.Page | None = None,
    refresh: bool = False,
) -> Outcome:
    """Take `project` (PEP 503 normalised, admitted by cfg.on_demand) and publish it.
    `first` is its upstream page when the caller already read it (a refresh)."""
    started = time.monotonic()
    timeout = (settings.policy.connect_timeout, settings.policy.read_timeout)
    try:
        if first is None:
            with pages.new_session(1) as session:
                first = pages.get_page(
                    session, cfg.index, project, timeout=timeout, attempts=settings.policy.attempts
                )
            _remember(layout, cfg.index, project, first)
        if first.status == 404:
            return Outcome(project, ABSENT, f"{first.url}: HTTP 404, no such project upstream")
        listing = first.files() if first.status == 200 else None
    except pages.UpstreamError as exc:
        return Outcome(project, FAILED, str(exc), seconds=time.monotonic() - started)
    known: dict[str, list[Listed]] = {project: listing} if listing is not None else {}
    files, problems = build.index_files(
        cfg, settings.uv_cache, [project], refresh=refresh, known=known
    )
    files = [f for f in files if not f.local]  # a wheelhouse project is sync's, never taken
    if problems or not files:
        detail = "\n".join(problems) or f"{project}: nothing to take (a wheelhouse project)"
        return Outcome(project, FAILED, detail, seconds=time.monotonic() - started)
    with publish.held(layout):
        fetched, failed = _fetch(layout, files, settings)
        record = demand.load(layout)
        now = time.time()
        old = record.taken.get(project) or demand.Taken(project, cfg.index, cfg.where, now)
        record.taken[project] = demand.with_files(old, files, now)
        demand.save(layout, record)
        written = publish.render_projects(layout, {f.project for f in files})
    seconds = time.monotonic() - started
    say(
        f"on demand: {project}: {len(written)} project pages, {fetched} files fetched "
        f"in {seconds:.1f}s"
    )
    if failed:
        return Outcome(project, FAILED, "\n".join(failed), tuple(sorted(written)), fetched, seconds)
    return Outcome(project, TAKEN, "", tuple(sorted(written)), fetched, seconds)


def _remember(layout: Layout, index: str, project: str, page: pages.Page) -> None:
    """Keep the page's validators: the first refresh is then a conditional request."""
    if page.status == 200:
        conn = store.connect(layout.db)
        try:
            validators.remember(conn, [(pages.project_url(index, project), page)])
        finally:
            conn.close()


def _fetch(layout: Layout, files: list[IndexFile], settings: Settings) -> tuple[int, list[str]]:
    """Sync's own downloads for these files (and their metadata): what is already held
    costs nothing. The partial files live apart from a concurrent sync's."""
    conn = store.connect(layout.db)
    try:
        records = publish.records_for(conn, files)
    finally:
        conn.close()
    wanted = build.wanted_for(IndexPlan(files), Manifest(), layout, records, demand.SOURCE)
    sizes = {w.key: st.st_size for w in wanted if (st := tree.stat_blob(layout, w.key))}
    work = plan(wanted, records, sizes).fetch
    if not work:
        return 0, []
    partial = layout.partial / "ondemand"
    partial.mkdir(parents=True, exist_ok=True)
    progress = Progress(quiet=True)
    outcome = Downloads(layout, settings.jobs, settings.policy, progress, partial=partial).run(work)
    failed = [f"fetch {w.url}: {error}" for w, error in outcome.failed]
    return outcome.fetched, failed
