"""An index's pages under www/<name>/simple/, rendered by the mirror's own renderer.

An upload or a yank rewrites only its project's two pages and the index root, each
atomically, under the index's publish lock: two uploads at once each write a root
that names every project whose pages exist, and a reader never sees half a page.
With `base: mirror` the root also names the mirror's projects; their pages are the
mirror's own, which nginx serves when the index has no project of that name.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from withcache import lock, tree
from withcache.indexes import db
from withcache.indexes.model import Index
from withcache.layout import Layout
from withcache.pyindex import publish
from withcache.pyindex.publish import Link


def simple_dir(layout: Layout, name: str) -> Path:
    return layout.www / name / "simple"


@contextlib.contextmanager
def publishing(layout: Layout, name: str) -> Iterator[None]:
    """One writer of an index's pages at a time (uploads, yanks and sync alike)."""
    with lock.hold(layout.state / f"index-{name}.lock", "index busy", wait=True):
        yield


def links(layout: Layout, ix: Index, files: Iterable[db.IndexedFile]) -> list[Link]:
    """The files a page lists: those whose blob is in the tree with its recorded size."""
    out = []
    for f in files:
        st = tree.stat_blob(layout, f.key)
        if st is None or st.st_size != f.size:
            continue
        meta = f.metadata_sha256
        if meta and f.metadata_key and tree.stat_blob(layout, f.metadata_key) is None:
            meta = None
        out.append(
            Link(
                filename=f.filename,
                href=ix.href(f.key, f.filename),
                sha256=f.sha256,
                size=f.size,
                requires_python=f.requires_python,
                yanked=False if f.yanked is None else (f.yanked or True),
                metadata_sha256=meta,
                upload_time=_iso(f.uploaded_at),
            )
        )
    return out


def mirror_projects(layout: Layout) -> list[str]:
    """The projects /simple/ has pages for."""
    simple = layout.www / "simple"
    try:
        return [d.name for d in simple.iterdir() if (d / publish.HTML).exists()]
    except FileNotFoundError:
        return []


def write_project(layout: Layout, ix: Index, project: str, files: list[Link]) -> bool:
    """One project's pages; with no file left to list, its pages go. True if it has pages."""
    d = simple_dir(layout, ix.name) / project
    if not files:
        for page in (publish.HTML, publish.JSON):
            with contextlib.suppress(FileNotFoundError):
                (d / page).unlink()
        with contextlib.suppress(OSError):
            d.rmdir()
        return False
    for page, data in publish.project_pages(project, files).items():
        publish.write_if_changed(d / page, data)
    return True


def write_root(layout: Layout, ix: Index, private: Iterable[str]) -> None:
    """The index root: its own projects, plus the mirror's with `base: mirror`."""
    names = set(private)
    if ix.base == "mirror":
        names.update(mirror_projects(layout))
    root = simple_dir(layout, ix.name)
    for page, data in publish.root_pages(sorted(names)).items():
        publish.write_if_changed(root / page, data)


def republish(layout: Layout, conn: sqlite3.Connection, ix: Index, projects: set[str]) -> None:
    """The pages of `projects` and the root; the caller holds publishing()."""
    for project in sorted(projects):
        write_project(layout, ix, project, links(layout, ix, db.files(conn, ix.name, project)))
    write_root(layout, ix, _listed(layout, conn, ix))


def publish_all(layout: Layout, conn: sqlite3.Connection, ix: Index) -> None:
    """Every page of the index (what sync does); pages of projects gone are removed."""
    with publishing(layout, ix.name):
        by_project: dict[str, list[db.IndexedFile]] = {}
        for f in db.files(conn, ix.name):
            by_project.setdefault(f.project, []).append(f)
        listed = {
            p for p, fs in by_project.items() if write_project(layout, ix, p, links(layout, ix, fs))
        }
        write_root(layout, ix, listed)
        publish.remove_pages(simple_dir(layout, ix.name), keep=listed)


def withdraw(layout: Layout, name: str) -> None:
    """An index left the manifests: its pages go (its files and records stay, so putting
    it back brings everything back)."""
    d = layout.www / name
    root = simple_dir(layout, name)
    for page in (publish.HTML, publish.JSON):  # the root first: it must not name missing pages
        with contextlib.suppress(FileNotFoundError):
            (root / page).unlink()
    shutil.rmtree(d, ignore_errors=True)


def _listed(layout: Layout, conn: sqlite3.Connection, ix: Index) -> list[str]:
    root = simple_dir(layout, ix.name)
    return [p for p in db.projects(conn, ix.name) if (root / p / publish.HTML).exists()]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
