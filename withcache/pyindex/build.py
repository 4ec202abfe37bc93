"""The first half of `sync` for the python: section: resolve, choose files, hand them to sync.

Resolving talks to the upstream (uv, then one page per resolved project for hashes,
yanks, Requires-Python and PEP 658 metadata); everything after that is plain data.
The chosen files are saved (state/pyindex.json) for render(), and returned as
sync work items verified against the upstream's sha256.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

from withcache import store, tree
from withcache.layout import Layout
from withcache.manifest import Manifest
from withcache.plan import Wanted
from withcache.pyindex import model, pages, resolve, select, wheelhouse
from withcache.pyindex.config import PythonConfig
from withcache.pyindex.model import IndexFile, IndexPlan, Listed
from withcache.pyindex.targets import Target, targets

SOURCE = "python"


def configs(manifest: Manifest) -> list[PythonConfig]:
    return list(manifest.python)


def index_files(
    cfg: PythonConfig,
    uv_cache: Path,
    requirements: list[str] | None = None,
    *,
    refresh: bool = False,
    known: dict[str, list[Listed]] | None = None,
) -> tuple[list[IndexFile], list[str]]:
    """The files one python: section asks for, or the problems that stop it.
    `requirements` replaces the section's own (a project taken on demand); `known`
    holds upstream listings already read (not read again)."""
    local, local_problems = wheelhouse.scan(cfg.wheelhouse, cfg.where)
    if local_problems:
        return [], [str(p) for p in local_problems]
    if requirements is None:
        requirements = [r.text for r in cfg.requirements]
    pins: dict[Target, list[resolve.Pin]] = {}
    if requirements:
        try:
            pins = resolve.resolve_all(
                requirements,
                targets(cfg.python, cfg.platforms),
                cfg.index,
                cfg.wheelhouse,
                cfg.sdists,
                uv_cache,
                refresh,
            )
        except resolve.ResolveError as exc:
            return [], [f"{cfg.requirements_where}: {exc}"]
    local_projects = {d.project for d in local}
    wanted_projects = {p.project for ps in pins.values() for p in ps} - local_projects
    listings = dict(known or {})
    try:
        listings.update(pages.fetch_projects(cfg.index, wanted_projects - listings.keys()))
    except pages.UpstreamError as exc:
        return [], [f"{cfg.where}: {exc}"]
    files, problems = select.select(
        pins,
        listings,
        [d.index_file() for d in local],
        cfg.sdists,
    )
    files = [dataclasses.replace(f, where=cfg.where) for f in files]
    return files, [f"{cfg.where}: {p}" for p in problems]


def plan_index(manifest: Manifest, uv_cache: Path, refresh: bool = False) -> IndexPlan:
    """Every python: section's files, merged by key; raise with every problem found."""
    merged: dict[str, IndexFile] = {}
    problems: list[str] = []
    for cfg in configs(manifest):
        files, cfg_problems = index_files(cfg, uv_cache, refresh=refresh)
        problems.extend(cfg_problems)
        for f in files:
            merged.setdefault(f.key, f)
    if problems:
        raise resolve.ResolveError("\n".join(problems))
    return IndexPlan(sorted(merged.values(), key=lambda f: (f.project, f.filename)))


def wanted_for(
    plan: IndexPlan,
    manifest: Manifest,
    layout: Layout,
    records: dict[str, store.Artifact],
    source: str = SOURCE,
) -> list[Wanted]:
    """Sync work items: upstream files and their metadata, verified against the upstream's
    hashes. Wheelhouse files already in the store are listed too (so --prune keeps them);
    missing ones are copied in by publish, as sync cannot fetch them from anywhere."""
    declared = manifest.by_key()  # an artifacts: entry for the same URL fetches it already
    out: list[Wanted] = []
    seen: set[str] = set()

    def add(key: str, url: str, name: str, sha256: str | None, where: str) -> None:
        if key not in declared and key not in seen:
            seen.add(key)
            out.append(Wanted(key, url, name, where, sha256, source=source))

    for f in plan.files:
        if f.local:
            rec = records.get(f.key)
            st = tree.stat_blob(layout, f.key)
            if rec and st and st.st_size == rec.size and rec.sha256 == f.sha256:
                add(f.key, f.key, f.filename, f.sha256, f.where)
            continue
        add(f.key, f.url, f.filename, f.sha256, f.where)
        if f.metadata_key:
            add(
                f.metadata_key, f.metadata_url, f.filename + ".metadata", f.metadata_sha256, f.where
            )
    return out


def wanted(
    manifest: Manifest,
    layout: Layout,
    records: dict[str, store.Artifact],
    *,
    say: Callable[[str], None],
    uv_cache: Path | None = None,
    save: bool = True,
    refresh: bool = False,
) -> list[Wanted]:
    """Resolve every python: section and return the work items, the files of projects
    taken on demand included (so a lost one is fetched again and --prune keeps them).
    With `save`, keep the plan (state/pyindex.json) for publishing after the downloads;
    a dry run passes save=False and a throwaway uv cache, and writes nothing under the
    data dir. With `refresh` (and `save`), the projects taken on demand are revalidated
    first (conditional requests; new releases and yanks)."""
    from withcache.pyindex import demand

    started = time.monotonic()
    cache = uv_cache or layout.state / "uv-cache"
    if refresh and save and any(c.on_demand for c in manifest.python):
        from withcache.pyindex import refresh as revalidate

        done = revalidate.run(layout, manifest.python, cache, say=say)
        say(f"python: on demand: {done.line()}")
    plan = plan_index(manifest, cache, refresh)
    if save:
        model.save(layout, plan)
    out = wanted_for(plan, manifest, layout, records)
    taken = demand.kept(demand.load(layout), plan, manifest.python)
    extra = wanted_for(IndexPlan(taken.files()), manifest, layout, records, demand.SOURCE)
    have = {w.key for w in out}
    out += [w for w in extra if w.key not in have]
    say(
        f"python: {len(plan.files)} files of {len(plan.projects())} projects resolved "
        f"in {time.monotonic() - started:.1f}s"
        + (f"; {len(taken.taken)} taken on demand" if taken.taken else "")
    )
    return out
