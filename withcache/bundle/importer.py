"""`withcache import`: place a bundle's artifacts into a data dir, every byte verified.

Each blob is copied under state/partial/ and hashed by placement.copy_in, then placed
by placement.install_many, like any other writer's bytes: nothing reaches www/ whose
sha256 differs from its record. The header members (BUNDLE.json, CONTENTS,
records.jsonl) anchor each other by sha256; if they disagree nothing is placed. A
blob that fails its hash is refused and named, and the rest go on. A tar that breaks
off keeps what was placed before the break, and names what it lacks: importing again
(the full copy, or the same one) skips what is already here, so an import resumes.
"""

from __future__ import annotations

import contextlib
import errno
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from withcache import atomic, index, metrics, placement, store, synced, tree
from withcache.bundle import format as bf
from withcache.bundle.members import Member, Truncated, tar_members
from withcache.errors import WithcacheError
from withcache.layout import Layout
from withcache.pyindex.model import plan_path

GROUP = 64  # verified blobs placed under one lock and one transaction at most


class BundleError(WithcacheError):
    """The bundle's own description is damaged or missing: nothing was placed."""


@dataclass
class Imported:
    placed: int = 0
    bytes: int = 0
    present: int = 0  # already here with the same bytes: skipped
    refused: list[tuple[str, str]] = field(default_factory=list)  # (what, why)
    missing: list[str] = field(default_factory=list)  # URLs the bundle should hold but lacks
    kept_local: list[str] = field(default_factory=list)  # here with other bytes: left alone
    cut_off: str | None = None  # where a tar broke off
    pages_differ: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.refused or self.missing or self.cut_off)


@dataclass
class _Head:
    header: bf.Header
    contents: dict[str, str]
    records: list[bf.Record]
    small: dict[str, bytes]  # verified manifests, plan and pages


def import_bundle(
    layout: Layout,
    source: Path | BinaryIO,
    *,
    wait: bool = False,
    say: Callable[[str], None] = lambda _m: None,
) -> Imported:
    """Import a bundle (a directory, a tar file, or a tar stream) into `layout`."""
    from withcache.sync import locked  # one writer of pages and index at a time, as sync

    layout.ensure()
    with locked(layout, wait):
        return _Import(layout, say).run(source)


class _Import:
    def __init__(self, layout: Layout, say: Callable[[str], None]) -> None:
        self.layout = layout
        self.say = say
        self.out = Imported()
        self.pending: list[placement.Item] = []
        self.n = 0

    def run(self, source: Path | BinaryIO) -> Imported:
        members = _members(source)
        with contextlib.closing(store.connect(self.layout.db)) as conn:
            self.conn = conn
            self.local = store.artifacts(conn)
            head, first_blob = self._head(members)  # a damaged head raises: nothing placed
            try:
                self._blobs(head, first_blob, members)
            except Truncated as exc:
                self.out.cut_off = str(exc)
            finally:
                self._flush()
        return self._finish(head)

    # --- the header members --------------------------------------------------------------

    def _head(self, members: Iterator[Member]) -> tuple[_Head, Member | None]:
        def take(name: str) -> bytes:
            m = next(members, None)
            if m is None or m.name != name:
                raise BundleError(
                    f"{name} missing (found {m.name if m else 'nothing'}): not a complete "
                    "withcache bundle; nothing placed"
                )
            return m.stream.read()

        try:
            header = bf.parse_header(take(bf.HEADER))
            raw = take(bf.CONTENTS)
            if bf.sha256(raw) != header.contents_sha256:
                raise bf.Damaged(f"{bf.CONTENTS} does not match {bf.HEADER}")
            contents = bf.parse_contents(raw)
            raw = take(bf.RECORDS)
            if bf.sha256(raw) != contents.get(bf.RECORDS):
                raise bf.Damaged(f"{bf.RECORDS} does not match {bf.CONTENTS}")
            records = bf.parse_records(raw)
            if len(records) != header.artifacts:
                raise bf.Damaged(
                    f"{bf.RECORDS} holds {len(records)} records, not {header.artifacts}"
                )
        except Truncated as exc:
            raise BundleError(f"the bundle's header is cut off ({exc}); nothing placed") from None
        except bf.Damaged as exc:
            raise BundleError(f"{exc}; nothing placed") from None
        small: dict[str, bytes] = {}
        head = _Head(header, contents, records, small)
        self.by_sha: dict[str, list[bf.Record]] = {}
        for rec in records:
            self.by_sha.setdefault(rec.artifact.sha256, []).append(rec)
        self.seen: set[str] = set()
        while True:
            try:
                m = next(members, None)
                if m is None or bf.sha_of_blob(m.name):
                    return head, m
                data = m.stream.read()
            except Truncated as exc:
                self.out.cut_off = str(exc)
                return head, None
            known = m.name == bf.PLAN or bf.is_manifest(m.name) or bf.is_page(m.name)
            if m.name not in contents or not known:
                self.out.refused.append((m.name, "not a part of a bundle; ignored"))
            elif bf.sha256(data) != contents[m.name]:
                self.out.refused.append((m.name, "sha256 differs from CONTENTS; not used"))
            else:
                small[m.name] = data

    # --- the blobs ---------------------------------------------------------------------------

    def _blobs(self, head: _Head, first: Member | None, members: Iterator[Member]) -> None:
        self.head = head
        if first is not None:
            self._blob(first)
        for m in members:
            self._blob(m)

    def _blob(self, m: Member) -> None:
        sha = bf.sha_of_blob(m.name)
        records = self.by_sha.get(sha or "")
        if sha is None or records is None or self.head.contents.get(m.name) != sha:
            self.out.refused.append((m.name, "not listed in CONTENTS and records; ignored"))
            return
        self.seen.add(sha)
        todo: list[bf.Record] = []
        for rec in records:
            a = rec.artifact
            mine = self.local.get(a.key)
            if mine is not None and mine.sha256 != a.sha256:
                self.out.kept_local.append(a.url)
            elif mine is not None and self._on_disk(mine):
                self.out.present += 1
            else:
                todo.append(rec)
        if not todo:
            return
        urls = ", ".join(r.artifact.url for r in todo[:3]) + (" ..." if len(todo) > 3 else "")
        try:
            first = self._copy(m, sha)
        except placement.Mismatch as exc:
            self.out.refused.append((f"{m.name} ({urls})", f"{exc}; not placed"))
            return
        if first.size != todo[0].artifact.size:
            first.path.unlink(missing_ok=True)
            self.out.refused.append((f"{m.name} ({urls})", "size differs from its record"))
            return
        files = [first]
        for _extra in todo[1:]:  # the same bytes under another key: a copy of its own
            with first.path.open("rb") as src:
                files.append(placement.copy_in(self.layout, src, self._part(), sha, durable=False))
        for rec, f in zip(todo, files, strict=True):
            a = rec.artifact
            verified = placement.Verified(
                f.path, f.size, f.sha256, a.etag, a.last_modified, synced=False, modified=rec.mtime
            )
            item = placement.Item(
                verified, a.key, a.url, a.source, a.name, replacing=a.key in self.local
            )
            self.pending.append(item)
        if len(self.pending) >= GROUP:
            self._flush()

    def _copy(self, m: Member, sha: str) -> placement.Verified:
        """A member's bytes into a partial file, hashed: by the kernel when they sit in a
        local file, else read from the stream."""
        if m.fd is not None:
            try:
                return placement.copy_in_file(
                    self.layout, m.fd, m.offset, m.size, self._part(), sha, durable=False
                )
            except placement.Mismatch:
                raise
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    raise Truncated(f"{m.name}: {exc.strerror or exc}") from None
        return placement.copy_in(self.layout, m.stream, self._part(), sha, durable=False)

    def _on_disk(self, a: store.Artifact) -> bool:
        st = tree.stat_blob(self.layout, a.key)
        return st is not None and st.st_size == a.size

    def _part(self) -> Path:
        self.n += 1
        return self.layout.partial / f"import-{self.n}.part"

    def _flush(self) -> None:
        """Place what was verified so far (also when the bundle breaks off)."""
        if not self.pending:
            return
        items, self.pending = self.pending, []
        try:
            placement.install_many(self.layout, self.conn, items)
        except (OSError, sqlite3.Error) as exc:
            for i in items:
                i.file.path.unlink(missing_ok=True)
                self.out.refused.append((i.url, f"cannot place: {exc}"))
            return
        for i in items:
            self.local[i.key] = i.record(0)
            self.out.placed += 1
            self.out.bytes += i.file.size
            self.say(f"imported {i.url}")

    # --- after the blobs -------------------------------------------------------------------------

    def _finish(self, head: _Head) -> Imported:
        for sha, records in self.by_sha.items():
            if sha not in self.seen:
                self.out.missing += [r.artifact.url for r in records]
        small = head.small
        manifests = {n: d for n, d in small.items() if bf.is_manifest(n)}
        if manifests:
            d = synced.directory(self.layout)
            d.mkdir(parents=True, exist_ok=True)
            for name, data in manifests.items():
                atomic.write(d / name.removeprefix("manifests/"), data)
        if bf.PLAN in small:
            self._python(small)
        index.render(self.layout)
        with contextlib.suppress(OSError, sqlite3.Error):
            metrics.write(self.layout)
        return self.out

    def _python(self, small: dict[str, bytes]) -> None:
        """The plan, then the pages rendered from it and the store: the same bytes as
        the exported pages when every file arrived (a difference is reported)."""
        from withcache.pyindex.publish import render

        atomic.write(plan_path(self.layout), small[bf.PLAN])
        render(self.layout)
        simple = self.layout.www / "simple"
        for name, data in small.items():
            if bf.is_page(name):
                page = simple / name.removeprefix("python/simple/")
                with contextlib.suppress(OSError):
                    if page.read_bytes() == data:
                        continue
                self.out.pages_differ.append(name.removeprefix("python/"))


def _members(source: Path | BinaryIO) -> Iterator[Member]:
    if isinstance(source, Path) and source.is_dir():
        return _dir_members(source)
    return tar_members(source)


def _dir_members(root: Path) -> Iterator[Member]:
    """A directory bundle in the order a tar would hold it (blobs in CONTENTS order)."""
    for name in (bf.HEADER, bf.CONTENTS):
        path = root / name
        if not path.is_file():
            return
        with path.open("rb") as f:
            yield Member(name, path.stat().st_size, f, f.fileno())
    try:
        listed = bf.parse_contents((root / bf.CONTENTS).read_bytes())
    except bf.Damaged:
        return
    names = [n for n in listed if not bf.sha_of_blob(n)]
    names.sort(key=lambda n: n != bf.RECORDS)
    names += [n for n in listed if bf.sha_of_blob(n)]
    for name in names:
        path = root / name
        if not path.is_file():
            continue  # a missing blob: reported from CONTENTS
        with path.open("rb") as f:
            yield Member(name, path.stat().st_size, f, f.fileno())
