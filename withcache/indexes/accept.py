"""Adding a file to an index, and yanking: the one path for uploads and `publish`.

The bytes are already a verified partial file (placement.copy_in hashed and fsynced
them under state/partial/). Then, in order: the file is inspected (dist.py), the
form and digest are checked, the name is checked against the index (identical
bytes again: accepted, nothing changes; other bytes: 409), its PEP 658 metadata and
then the file are placed through placement.install, the row and the audit record
are committed, and the project's pages and the root are rewritten. A refusal at any
step before placement changes nothing in www/ or the DB.
"""

from __future__ import annotations

import functools
import io
import os
import pwd
import sqlite3
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from withcache import budget, placement, store, synced
from withcache.errors import WithcacheError
from withcache.indexes import db, dist, pages
from withcache.indexes.dist import Conflict
from withcache.indexes.model import SOURCE, Index
from withcache.layout import Layout
from withcache.listed import Listed
from withcache.pyindex import publish


@dataclass(frozen=True)
class Accepted:
    """What an accepted upload became."""

    index: str
    filename: str
    project: str
    version: str
    sha256: str
    size: int
    href: str
    new: bool  # False: the identical file was there already


def partial_path(layout: Layout, kind: str = "upload") -> Path:
    """A fresh partial file (state/partial/upload-*.part for the service; `withcache
    publish` uses its own prefix, so a restarting service never removes its file)."""
    return layout.partial / f"{kind}-{uuid.uuid4().hex}.part"


def stale_partials(layout: Layout) -> list[Path]:
    """Uploads cut short (a killed service): removed when the service starts."""
    try:
        return sorted(layout.partial.glob("upload-*.part"))
    except FileNotFoundError:
        return []


def accept(
    layout: Layout,
    ix: Index,
    verified: placement.Verified,
    filename: str,
    *,
    user: str,
    addr: str | None,
    form: Mapping[str, str] | None,
    action: str = "upload",
) -> Accepted:
    """Check a verified partial file and add it to the index; it is consumed either way."""
    try:
        d = dist.inspect(verified.path, filename)
        if form is not None:
            dist.check_form(d, form)
            dist.check_digest(form, verified.sha256)
        return _add(layout, ix, verified, d, user=user, addr=addr, action=action)
    finally:
        verified.path.unlink(missing_ok=True)


def make_room(layout: Layout, size: int) -> None:
    """An upload obeys the store's budget and min_free like every download: evict what
    may go, or raise budget.NoRoom, before the first byte is written. The limits are
    those of the manifests as last synced (state/manifests/)."""
    listed = _listed(layout.root)
    lim = budget.limits(layout, listed.store)
    budget.ensure_room(layout, size, lim, listed=listed(), reason="upload")


@functools.cache
def _listed(root: Path) -> Listed:
    """One reader per data dir and process: it re-reads the copies only when they change."""
    return Listed([synced.directory(Layout(root))])


def publish_file(layout: Layout, ix: Index, path: Path, user: str) -> Accepted:
    """`withcache publish`: a file on this host, the same checks without a form."""
    try:
        make_room(layout, path.stat().st_size)
    except OSError as exc:
        raise WithcacheError(f"{path}: {exc.strerror or exc}") from None
    part = partial_path(layout, "publish")
    try:
        with path.open("rb") as src:
            verified = placement.copy_in(layout, src, part, None)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise WithcacheError(f"{path}: {exc.strerror or exc}") from None
    return accept(
        layout, ix, verified, path.name, user=user, addr=None, form=None, action="publish"
    )


def _add(
    layout: Layout,
    ix: Index,
    verified: placement.Verified,
    d: dist.Dist,
    *,
    user: str,
    addr: str | None,
    action: str,
) -> Accepted:
    key = ix.key(verified.sha256, d.filename)
    href = ix.href(key, d.filename)
    conn = store.connect(layout.db)
    try:
        with pages.publishing(layout, ix.name):
            existing = db.file(conn, ix.name, d.filename)
            if existing is not None:
                if existing.sha256 != verified.sha256:
                    raise Conflict(
                        f"{d.filename} already exists in {ix.name} with other bytes "
                        f"(sha256 {existing.sha256}); files are immutable: use a new version"
                    )
                db.audit(conn, _event(ix, action, user, addr, verified, d, "identical file again"))
                return Accepted(
                    ix.name, d.filename, d.project, d.version, verified.sha256,
                    verified.size, href, new=False,
                )  # fmt: skip
            meta_key, meta_sha = _place(layout, conn, key, verified, d)
            row = db.IndexedFile(
                index=ix.name,
                filename=d.filename,
                project=d.project,
                version=d.version,
                key=key,
                sha256=verified.sha256,
                size=verified.size,
                requires_python=d.requires_python,
                metadata_key=meta_key,
                metadata_sha256=meta_sha,
                yanked=None,
                uploaded_at=db.now(),
                uploader=user,
            )
            db.add(conn, row, _event(ix, action, user, addr, verified, d, None))
            pages.republish(layout, conn, ix, {d.project})
    finally:
        conn.close()
    return Accepted(
        ix.name, d.filename, d.project, d.version, verified.sha256, verified.size, href, new=True
    )


def _place(
    layout: Layout, conn: sqlite3.Connection, key: str, verified: placement.Verified, d: dist.Dist
) -> tuple[str | None, str | None]:
    """A wheel's METADATA as its own blob (PEP 658), then the file itself.

    Two single placements, each made durable by its own fsyncs: a group would be
    flushed with one syncfs of the whole filesystem, which on a busy disk waits for
    everyone's writes. The metadata goes first: a crash between the two leaves an
    unused blob, never a file whose page offers metadata that is not there."""
    known = set(store.artifacts_with_keys(conn, [key, key + ".metadata"]))
    meta: placement.Verified | None = None
    meta_key = key + ".metadata"
    if d.kind == "wheel":
        meta_part = verified.path.with_name(verified.path.name + ".metadata")
        meta = placement.copy_in(layout, io.BytesIO(d.metadata), meta_part, None)
        try:
            placement.install(
                layout,
                conn,
                placement.Item(
                    meta,
                    key=meta_key,
                    url=meta_key,
                    source=SOURCE,
                    name=d.filename + ".metadata",
                    replacing=meta_key in known,
                ),
            )
        finally:
            meta.path.unlink(missing_ok=True)
    placement.install(
        layout,
        conn,
        placement.Item(
            verified, key=key, url=key, source=SOURCE, name=d.filename, replacing=key in known
        ),
    )
    if meta is None or not publish.link_metadata(layout, key, meta_key):
        return None, None
    return meta_key, meta.sha256


def yank(
    layout: Layout,
    ix: Index,
    project: str,
    version: str,
    *,
    reason: str | None,
    undo: bool,
    user: str,
) -> list[str]:
    """Mark every file of project==version yanked (PEP 592), or take that back; the
    files stay installable by an exact pin. Returns the files changed."""
    name = canonicalize_name(project)
    conn = store.connect(layout.db)
    try:
        with pages.publishing(layout, ix.name):
            files = [
                f for f in db.files(conn, ix.name, name) if dist.same_version(f.version, version)
            ]
            if not files:
                raise WithcacheError(f"{ix.name} has no files of {name} {version}")
            state = None if undo else (reason or "")
            changed = [f.filename for f in files if f.yanked != state]
            if changed:
                action = "unyank" if undo else "yank"
                event = db.Event(db.now(), ix.name, action, user, None, "", None, None, reason)
                db.set_yanked(conn, ix.name, changed, state, event)
                pages.republish(layout, conn, ix, {name})
    finally:
        conn.close()
    return changed


def _event(
    ix: Index,
    action: str,
    user: str,
    addr: str | None,
    verified: placement.Verified,
    d: dist.Dist,
    detail: str | None,
) -> db.Event:
    return db.Event(
        db.now(), ix.name, action, user, addr, d.filename, verified.size, verified.sha256, detail
    )


def local_user() -> str:
    """Who runs `withcache publish` or `yank` on the host, for the audit record."""
    try:
        return "local:" + pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"local:{os.geteuid()}"
