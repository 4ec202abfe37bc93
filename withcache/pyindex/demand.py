"""The projects taken on demand, and their files: state/ondemand.json.

`state/pyindex.json` is sync's resolved plan, rewritten by every sync. Projects the
watcher takes because someone asked for them are not in any manifest, so they are
kept apart, here, one entry per project taken (a *root*) with the files resolved for
it and its dependencies. Publishing lists the union of both records.

Who writes it: the watcher (a project taken or refreshed) and sync (roots a manifest
has since adopted, or that no `on_demand` glob admits any more, are dropped), always
under the index lock (publish.held), which also covers writing www/simple/.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from withcache import atomic, store, tree
from withcache.layout import Layout
from withcache.pyindex import model
from withcache.pyindex.config import PythonConfig
from withcache.pyindex.model import IndexFile, IndexPlan

VERSION = 1
SOURCE = "ondemand"  # artifacts.source of files fetched for a project taken on demand


@dataclass
class Taken:
    """One project taken on demand: where from, when, and the files resolved for it."""

    project: str  # PEP 503 normalised
    index: str  # the upstream simple index it was taken from
    where: str  # the python: section whose on_demand admitted it (file:line)
    taken_at: float
    refreshed_at: float = 0.0
    files: list[IndexFile] = field(default_factory=list)

    def projects(self) -> set[str]:
        return {f.project for f in self.files}


@dataclass
class Demand:
    """Every root taken on demand."""

    taken: dict[str, Taken] = field(default_factory=dict)

    def files(self) -> list[IndexFile]:
        """Every file of every root, once per key."""
        seen: dict[str, IndexFile] = {}
        for t in self.taken.values():
            for f in t.files:
                seen.setdefault(f.key, f)
        return list(seen.values())

    def projects(self) -> set[str]:
        return {f.project for t in self.taken.values() for f in t.files}

    def keys(self) -> set[str]:
        out = set()
        for f in self.files():
            out.add(f.key)
            if f.metadata_key:
                out.add(f.metadata_key)
        return out

    def roots_with(self, project: str) -> list[Taken]:
        """The roots whose resolution includes `project` (itself, or as a dependency)."""
        return [t for t in self.taken.values() if project in t.projects()]


def record_path(layout: Layout) -> Path:
    return layout.state / "ondemand.json"


def load(layout: Layout) -> Demand:
    """The record; empty when nothing was taken yet (or it is unreadable: the files
    stay in the store and the next miss takes the project again)."""
    try:
        doc = json.loads(record_path(layout).read_bytes())
    except (OSError, ValueError):
        return Demand()
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        return Demand()
    out = Demand()
    for name, t in doc.get("taken", {}).items():
        files = [IndexFile(**f) for f in t.pop("files", [])]
        out.taken[name] = Taken(**t, files=files)
    return out


def save(layout: Layout, demand: Demand) -> None:
    """Write the record whole (the caller holds the index lock)."""
    layout.state.mkdir(parents=True, exist_ok=True)
    doc = {
        "version": VERSION,
        "taken": {name: asdict(t) for name, t in sorted(demand.taken.items())},
    }
    atomic.write(record_path(layout), (json.dumps(doc, indent=1) + "\n").encode())


def merged(plan: IndexPlan, demand: Demand) -> list[IndexFile]:
    """Sync's files and the on-demand files, once per key. Sync's entry wins, but a yank
    seen by either side shows (the watcher may have seen it since the last sync)."""
    out: dict[str, IndexFile] = {f.key: f for f in plan.files}
    for f in demand.files():
        mine = out.get(f.key)
        if mine is None:
            out[f.key] = f
        elif mine.yanked is False and f.yanked is not False:
            out[f.key] = replace(mine, yanked=f.yanked)
    return sorted(out.values(), key=lambda f: (f.project, f.filename))


def not_in_manifest(plan: IndexPlan, demand: Demand) -> dict[str, float]:
    """Projects only the on-demand record provides -> when they were first taken:
    "on demand, not yet in a manifest"."""
    synced = {f.project for f in plan.files}
    out: dict[str, float] = {}
    for t in demand.taken.values():
        for p in t.projects() - synced:
            out[p] = min(out.get(p, t.taken_at), t.taken_at)
    return dict(sorted(out.items()))


def kept(demand: Demand, plan: IndexPlan, configs: Sequence[PythonConfig]) -> Demand:
    """The roots that stay: not resolved by a manifest itself (adopted, e.g. after
    `withcache add --python`) and still admitted by some on_demand glob."""
    synced = {f.project for f in plan.files}
    return Demand(
        {
            name: t
            for name, t in demand.taken.items()
            if name not in synced and any(c.takes(name) for c in configs)
        }
    )


def pending(layout: Layout) -> dict[str, float]:
    """not_in_manifest() from the records on disk (for the index, catalog and report)."""
    record = load(layout)
    if not record.taken:
        return {}
    return not_in_manifest(model.load_or_empty(layout), record)


def settle(
    layout: Layout, demand: Demand, plan: IndexPlan, configs: Sequence[PythonConfig]
) -> Demand:
    """kept(), saved if anything was dropped. The caller holds the index lock."""
    keep = kept(demand, plan, configs)
    if keep.taken.keys() != demand.taken.keys():
        save(layout, keep)
    return keep


def tidy_store(
    layout: Layout, conn: sqlite3.Connection, plan: IndexPlan, demand: Demand, *, prune: bool
) -> list[str]:
    """Files a manifest now resolves become sync's own (source python); with `prune`,
    on-demand files that no record lists any more leave the tree. Returns the URLs
    removed. The caller holds the index lock, so no file of a project being taken can
    be mistaken for an orphan."""
    synced = set()
    for f in plan.files:
        synced.add(f.key)
        if f.metadata_key:
            synced.add(f.metadata_key)
    taken = demand.keys()
    rows = conn.execute("SELECT key, url FROM artifacts WHERE source = ?", (SOURCE,)).fetchall()
    adopt = [(r[0],) for r in rows if r[0] in synced]
    if adopt:
        with store.transaction(conn):
            conn.executemany("UPDATE artifacts SET source = 'python' WHERE key = ?", adopt)
    removed: list[str] = []
    if prune:
        for key, url in rows:
            if key not in synced and key not in taken:
                tree.remove(layout, key)
                store.delete_artifact(conn, key)
                removed.append(url)
    return removed


def remove_record(layout: Layout) -> None:
    """The python: section is gone: so is every project taken on demand."""
    record_path(layout).unlink(missing_ok=True)


def with_files(t: Taken, files: Iterable[IndexFile], when: float) -> Taken:
    """A root with more files: earlier ones stay listed (installs pinned to them keep
    working), new ones (a new release, a newer dependency) are added."""
    by_key = {f.key: f for f in t.files}
    for f in files:
        by_key[f.key] = f
    files_sorted = sorted(by_key.values(), key=lambda f: (f.project, f.filename))
    return replace(t, files=files_sorted, refreshed_at=when)
