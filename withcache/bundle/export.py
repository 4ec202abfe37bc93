"""`withcache export`: the store (or part of it) as one bundle for a site with no network.

It reads the records and the manifests as synced, and streams each blob once (blobs
with the same sha256 are one member). It writes nothing in the data dir and takes no
lock: a blob evicted while the export runs is reported and left out, never half
written. A tar written to a file appears under its name only once it is complete.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from withcache import fmt, store, synced, tree
from withcache.bundle import format as bf
from withcache.bundle.members import DirWriter, TarWriter, Writer
from withcache.layout import Layout
from withcache.manifest import Manifest
from withcache.pyindex.model import plan_path

PYTHON_SOURCES = frozenset({"python"})


@dataclass(frozen=True)
class Selection:
    """Which artifacts go into the bundle."""

    since: float | None = None  # fetched at or after
    keys: Collection[str] | None = None  # a manifest subset's keys (None: every artifact)
    python: bool = True  # the Python index's files and pages
    manifests: tuple[Path, ...] | None = None  # the subset's files (None: as synced)

    @classmethod
    def of(cls, m: Manifest, since: float | None = None) -> Selection:
        """The artifacts some manifests list (and the Python index, if one has python:)."""
        return cls(since, m.listed_keys(), bool(m.python), tuple(Path(f) for f in m.files))


@dataclass
class Exported:
    artifacts: int = 0
    bytes: int = 0
    blobs: int = 0
    left_out: list[tuple[str, str]] = field(default_factory=list)  # (url, why)


def export(
    layout: Layout,
    out: Path | int,
    select: Selection = Selection(),
    *,
    verify: bool = False,
    say: Callable[[str], None] = lambda _m: None,
) -> Exported:
    """Write a bundle to `out`: a directory, a file ending in .tar, or an open fd (a tar)."""
    done = Exported()
    records = _selected(layout, select)
    present: list[store.Artifact] = []
    mtimes: list[bf.Record] = []
    for a in records:
        st = tree.stat_blob(layout, a.key)
        if st is None or st.st_size != a.size:
            done.left_out.append((a.url, "not on disk (evicted, pruned or never placed)"))
        else:
            present.append(a)
            mtimes.append(bf.Record(a, st.st_mtime))
    blobs: dict[str, store.Artifact] = {}
    for a in present:
        blobs.setdefault(a.sha256, a)
    small: list[tuple[str, bytes]] = [(bf.RECORDS, bf.records_text(mtimes))]
    small += _manifests(layout, select)
    if select.python:
        small += _python(layout)
    listing = [(name, bf.sha256(data)) for name, data in small]
    listing += [(bf.blob_name(sha), sha) for sha in blobs]
    contents = bf.contents_text(listing)
    header = bf.Header(
        created=fmt.iso(time.time()),
        source=f"{socket.gethostname()}:{layout.root.resolve()}",
        contents_sha256=bf.sha256(contents),
        artifacts=len(present),
        total=sum(a.size for a in present),
        since=fmt.iso(select.since) if select.since else None,
        subset=tuple(p.name for p in select.manifests or ()) if select.keys is not None else (),
    )
    with _writer(out) as w:
        w.add_bytes(bf.HEADER, header.encode())
        w.add_bytes(bf.CONTENTS, contents)
        for name, data in small:
            w.add_bytes(name, data)
        for a in blobs.values():
            why = _add_blob(layout, w, a, verify)
            if why:
                done.left_out.append((a.url, why))
                continue
            done.blobs += 1
            say(f"exported {a.url} ({fmt.human(a.size)})")
    done.artifacts = len(present)
    done.bytes = header.total
    return done


def _selected(layout: Layout, select: Selection) -> list[store.Artifact]:
    conn = store.connect(layout.db)
    try:
        records = store.artifacts(conn)
    finally:
        conn.close()
    out = []
    for key in sorted(records):
        a = records[key]
        if select.since is not None and a.fetched_at < select.since:
            continue
        python = select.python and a.source in PYTHON_SOURCES
        if select.keys is not None and key not in select.keys and not python:
            continue
        out.append(a)
    return out


def _manifests(layout: Layout, select: Selection) -> list[tuple[str, bytes]]:
    paths = list(select.manifests) if select.manifests is not None else synced.files(layout)
    return [
        (f"manifests/{name}", p.read_bytes()) for name, p in synced.names(map(str, paths)).items()
    ]


def _python(layout: Layout) -> list[tuple[str, bytes]]:
    """The plan and the pages, when the store has a Python index."""
    plan = plan_path(layout)
    simple = layout.www / "simple"
    if not plan.exists() or not simple.is_dir():
        return []
    out = [(bf.PLAN, plan.read_bytes())]
    for page in sorted(simple.rglob("index.*")):
        name = f"python/simple/{page.relative_to(simple).as_posix()}"
        if bf.is_page(name):
            out.append((name, page.read_bytes()))
    return out


def _add_blob(layout: Layout, w: Writer, a: store.Artifact, verify: bool) -> str | None:
    """Copy one blob in; why it was left out, or None."""
    try:
        fd = os.open(tree.blob_path(layout, a.key), os.O_RDONLY)
    except FileNotFoundError:
        return "evicted or pruned while the export ran; not in the bundle"
    try:
        if os.fstat(fd).st_size != a.size:  # replaced meanwhile: the record is stale
            return "replaced while the export ran; not in the bundle"
        digest = w.add_file(bf.blob_name(a.sha256), fd, a.size, verify=verify)
    finally:
        os.close(fd)
    if verify and digest != a.sha256:
        return f"bytes on disk hash to {digest}, not to their record: the import will refuse them"
    return None


@contextlib.contextmanager
def _writer(out: Path | int) -> Iterator[Writer]:
    if isinstance(out, int):
        w: Writer = TarWriter(out, time.time())
        yield w
        w.close()
        return
    if out.suffix != ".tar":
        d = DirWriter(out)
        yield d
        d.close()
        return
    part = out.with_name(out.name + ".part")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        t = TarWriter(fd, time.time())
        yield t
        t.close()
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        part.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(part, out)
