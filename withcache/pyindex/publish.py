"""The second half of `sync` for the python: section: write www/simple/ from what arrived.

A file is listed only when the store holds it with the very sha256 the plan expects:
a download that failed, or whose bytes differed from the upstream's listing, was
never recorded, so it is simply absent. Each project gets index.html (PEP 503) and
index.v1json (PEP 691) side by side; nginx picks one by Accept. Pages are written
atomically and only when their bytes change. A listed wheel's PEP 658 metadata is
also linked next to its bytes (www/b/<token>/@metadata), where nginx serves
`<file URL>.metadata`.

The pages list two records merged: sync's plan (state/pyindex.json) and the projects
taken on demand (state/ondemand.json, see demand.py). render() writes every page (the
end of a sync); render_projects() writes a few pages and the root (a project taken on
demand), so its cost does not grow with the index. Both run under the index lock
(held()), so a sync and the watcher never write pages from different views.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
import threading
from collections.abc import Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote

import jinja2
from packaging.version import InvalidVersion, Version

from withcache import atomic, keys, lock, store, tree
from withcache.layout import Layout
from withcache.pyindex import demand, model, wheelhouse
from withcache.pyindex.config import PythonConfig
from withcache.pyindex.model import IndexFile, IndexPlan, Yanked

API_VERSION = "1.1"
HTML = "index.html"
JSON = "index.v1json"
METADATA = "@metadata"
WRITERS = 8  # concurrent page writes: fsyncs overlap in the journal


@dataclass(frozen=True)
class Link:
    """One file as a project page shows it."""

    filename: str
    href: str
    sha256: str
    size: int
    requires_python: str | None
    yanked: Yanked
    metadata_sha256: str | None
    upload_time: str | None

    @property
    def yanked_reason(self) -> str:
        return self.yanked if isinstance(self.yanked, str) else ""


def href(key: str, filename: str) -> str:
    """/b/<token>/<filename>: nginx serves by token; installers read the filename."""
    return f"/{keys.token_dir(key)}/{quote(filename, safe='')}"


@contextlib.contextmanager
def held(layout: Layout) -> Iterator[None]:
    """The index lock: whoever writes www/simple/ or state/ondemand.json holds it (a
    sync's last step, a project taken on demand). Held for seconds at most."""
    with lock.hold(layout.state / "pyindex.lock", "index lock busy", wait=True):
        yield


@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("withcache", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _version(filename: str) -> str | None:
    nv = wheelhouse.name_version(filename)
    return nv[1] if nv else None


def _sort_key(v: str) -> tuple[int, Version | str]:
    try:
        return 0, Version(v)
    except InvalidVersion:
        return 1, v


def project_json(name: str, links: list[Link]) -> bytes:
    versions = sorted({v for link in links if (v := _version(link.filename))}, key=_sort_key)
    files = []
    for link in links:
        f: dict[str, object] = {
            "filename": link.filename,
            "url": link.href,
            "hashes": {"sha256": link.sha256},
            "requires-python": link.requires_python,
            "yanked": link.yanked,
            "size": link.size,
        }
        if link.metadata_sha256:
            f["core-metadata"] = {"sha256": link.metadata_sha256}
            f["dist-info-metadata"] = {"sha256": link.metadata_sha256}
        if link.upload_time:
            f["upload-time"] = link.upload_time
        files.append(f)
    doc = {"meta": {"api-version": API_VERSION}, "name": name, "versions": versions, "files": files}
    return (json.dumps(doc, ensure_ascii=False) + "\n").encode()


def root_json(projects: list[str]) -> bytes:
    doc = {"meta": {"api-version": API_VERSION}, "projects": [{"name": p} for p in projects]}
    return (json.dumps(doc) + "\n").encode()


def write_if_changed(path: Path, data: bytes) -> bool:
    """Atomically replace `path` unless it already holds `data` (no fsync churn)."""
    try:
        if path.read_bytes() == data:
            return False
    except (FileNotFoundError, NotADirectoryError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o755)
    atomic.write(path, data)
    return True


def links(
    layout: Layout, plan: IndexPlan, records: dict[str, store.Artifact]
) -> dict[str, list[Link]]:
    """Project -> files that the store holds with the expected bytes (and their metadata)."""
    out: dict[str, list[Link]] = {}
    for f in plan.files:
        rec = _present(layout, records, f.key, f.sha256)
        if rec is None:
            continue
        meta = (
            _present(layout, records, f.metadata_key, f.metadata_sha256) if f.metadata_key else None
        )
        if meta is not None and not link_metadata(layout, f.key, meta.key):
            meta = None
        out.setdefault(f.project, []).append(
            Link(
                filename=f.filename,
                href=href(f.key, f.filename),
                sha256=rec.sha256,
                size=rec.size,
                requires_python=f.requires_python,
                yanked=f.yanked,
                metadata_sha256=meta.sha256 if meta else None,
                upload_time=f.upload_time,
            )
        )
    return out


def _present(
    layout: Layout, records: dict[str, store.Artifact], key: str | None, sha256: str | None
) -> store.Artifact | None:
    rec = records.get(key) if key else None
    if rec is None or (sha256 is not None and rec.sha256 != sha256):
        return None
    st = tree.stat_blob(layout, rec.key)
    return rec if st is not None and st.st_size == rec.size else None


def link_metadata(layout: Layout, file_key: str, meta_key: str) -> bool:
    """Hard-link the metadata blob beside the file's bytes, where nginx answers
    `<file>.metadata`; False when it could not be done (the page then offers none).

    A link, not a copy: the blob is already whole and fsynced, so this costs no write."""
    src = tree.blob_path(layout, meta_key)
    dest = tree.blob_path(layout, file_key).parent / METADATA
    try:
        if dest.exists() and os.path.samefile(src, dest):
            return True
        tmp = dest.with_name(f".tmp-{METADATA}-{os.getpid()}-{threading.get_ident()}")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:  # no hard links here: copy
            write_if_changed(dest, src.read_bytes())
            return True
        os.replace(tmp, dest)
    except OSError:
        return False
    return True


def project_pages(name: str, files: list[Link]) -> dict[str, bytes]:
    """A project's two pages (PEP 503 HTML, PEP 691 JSON) by file name, files sorted.
    Every index (the mirror and the private ones) renders its pages here."""
    files = sorted(files, key=lambda link: link.filename)
    html = _env().get_template("simple/project.html").render(name=name, files=files)
    return {HTML: html.encode(), JSON: project_json(name, files)}


def root_pages(projects: list[str]) -> dict[str, bytes]:
    """The project list, both formats, by file name."""
    html = _env().get_template("simple/root.html").render(projects=projects)
    return {HTML: html.encode(), JSON: root_json(projects)}


def write_pages(layout: Layout, projects: dict[str, list[Link]]) -> None:
    """Every page, then the root, then the stale pages go."""
    simple = layout.www / "simple"
    _write_projects(simple, projects)
    _write_root(simple, sorted(projects))  # the root last: it never names a missing page
    remove_pages(simple, keep=set(projects))


def _write_projects(simple: Path, projects: dict[str, list[Link]]) -> None:
    """Project pages, a few at once (each write waits on its fsync)."""
    writes: list[tuple[Path, bytes]] = []
    for name, files in projects.items():
        d = simple / name
        writes += [(d / page, data) for page, data in project_pages(name, files).items()]
    if len(writes) <= 2:
        for w in writes:
            write_if_changed(*w)
        return
    with ThreadPoolExecutor(WRITERS, "pyindex-pages") as pool:
        list(pool.map(lambda w: write_if_changed(*w), writes))


def _write_root(simple: Path, names: list[str]) -> None:
    for page, data in root_pages(names).items():
        write_if_changed(simple / page, data)


def published(simple: Path) -> set[str]:
    """The projects the root lists now (read from its JSON; the directories if that is
    unreadable)."""
    try:
        doc = json.loads((simple / JSON).read_bytes())
        return {str(p["name"]) for p in doc["projects"]}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        return {d.name for d in simple.iterdir() if (d / HTML).is_file()}
    except OSError:
        return set()


def remove_pages(simple: Path, keep: set[str]) -> None:
    """Remove the pages of projects not in `keep` (and their directories, once empty)."""
    for d in simple.iterdir():
        if d.is_dir() and d.name not in keep:
            _remove_page(d)


def _remove_page(d: Path) -> None:
    for page in (HTML, JSON):
        with contextlib.suppress(FileNotFoundError):
            (d / page).unlink()
    with contextlib.suppress(OSError):
        d.rmdir()


def render(
    layout: Layout, configs: Sequence[PythonConfig] = (), *, prune: bool = False
) -> dict[str, list[Link]]:
    """Copy missing wheelhouse files into the store, then write every page, from sync's
    plan and the projects taken on demand that `configs` still admit. With `prune`,
    on-demand files no record lists leave the tree. The caller holds the sync lock
    (the pipeline does); this takes the index lock."""
    with held(layout):
        plan = model.load(layout)
        taken = demand.settle(layout, demand.load(layout), plan, configs)
        conn = store.connect(layout.db)
        try:
            demand.tidy_store(layout, conn, plan, taken, prune=prune)
            records = store.artifacts(conn)
            for f in plan.files:
                if f.local and _present(layout, records, f.key, f.sha256) is None:
                    try:
                        records[f.key] = wheelhouse.place(layout, conn, f)
                    except OSError as exc:  # not listed; the rest of the index still renders
                        print(
                            f"withcache: error: wheelhouse {f.url} ({f.where}): {exc}",
                            file=sys.stderr,
                        )
        finally:
            conn.close()
        projects = links(layout, IndexPlan(demand.merged(plan, taken)), records)
        write_pages(layout, projects)
    return projects


def render_projects(layout: Layout, projects: Collection[str]) -> dict[str, list[Link]]:
    """Write only these projects' pages, then the root: what taking or refreshing a
    project on demand changes. Reads both records but only the store rows it lists.
    The caller holds the index lock."""
    wanted = set(projects)
    files = [
        f
        for f in demand.merged(model.load_or_empty(layout), demand.load(layout))
        if f.project in wanted
    ]
    conn = store.connect(layout.db)
    try:
        records = records_for(conn, files)
    finally:
        conn.close()
    out = links(layout, IndexPlan(files), records)
    simple = layout.www / "simple"
    _write_projects(simple, out)
    names = (published(simple) | out.keys()) - (wanted - out.keys())
    _write_root(simple, sorted(names))
    for gone in wanted - out.keys():  # nothing left to list: after the root stops naming it
        if (simple / gone).is_dir():
            _remove_page(simple / gone)
    return out


def records_for(conn: sqlite3.Connection, files: Sequence[IndexFile]) -> dict[str, store.Artifact]:
    """The store's records of these files and their metadata (not the whole table)."""
    wanted = sorted({k for f in files for k in (f.key, f.metadata_key) if k})
    rows = store.rows_where_in(
        conn,
        "SELECT key, url, name, size, sha256, fetched_at, etag, last_modified, source "
        "FROM artifacts",
        "key",
        wanted,
    )
    return {r[0]: store.Artifact(*r) for r in rows}


def withdraw(layout: Layout, *, prune: bool = False) -> None:
    """No python: section any more: take the whole index down (a 404 at /simple/), so
    it never lists files that `sync --prune` is free to remove. Projects taken on
    demand go with it (and, with `prune`, their files)."""
    with held(layout):
        if prune:
            conn = store.connect(layout.db)
            try:
                demand.tidy_store(layout, conn, IndexPlan(), demand.Demand(), prune=True)
            finally:
                conn.close()
        simple = layout.www / "simple"
        if simple.is_dir():
            for page in (HTML, JSON):  # the root first: it must not name missing pages
                with contextlib.suppress(FileNotFoundError):
                    (simple / page).unlink()
            remove_pages(simple, keep=set())
            with contextlib.suppress(OSError):
                simple.rmdir()
        with contextlib.suppress(FileNotFoundError):
            model.plan_path(layout).unlink()
        demand.remove_record(layout)
