"""Put verified bytes into the served tree: the one place that does it.

Every writer (sync, auto-fill, the wheelhouse, uploads, mirrors, bundle imports)
ends the same way: a complete, fsynced file under state/partial/ whose sha256 it
checked becomes a record and a blob in www/b/. Order matters for "www/ never holds
a file whose sha256 differs from its record": old bytes go first (a replacement),
then the record, then the atomic rename. A cross-process lock keeps the writers
from interleaving those steps for the same key.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import BinaryIO

from withcache import atomic, keys, lock, store, tree
from withcache.layout import Layout
from withcache.mirrors import tree as mirror_tree
from withcache.mirrors.paths import MirrorRef

CHUNK = 1 << 20
GROUP_SYNC = 3  # this many files not yet fsynced are flushed with one syncfs
FLUSH_EVERY = 32 << 20


@dataclass(frozen=True)
class Verified:
    """A complete, fsynced file under state/partial/ whose bytes were hashed."""

    path: Path
    size: int
    sha256: str
    etag: str | None = None
    last_modified: str | None = None
    synced: bool = True  # fsynced already; else placement makes it durable (grouped)
    # The file's time where it was placed first (a bundle's source): used when the origin
    # sent no Last-Modified, so nginx's Last-Modified and ETag stay those of that site.
    modified: float | None = None
    # What the origin did, for clients that see the cache instead (the shims, nginx):
    disposition: str | None = None  # the final response's Content-Disposition
    redirects: int = 0  # redirects that led to the bytes
    final_url: str | None = None  # where they led, query dropped ('?' if it had one)

    @property
    def mtime(self) -> float | None:
        """The origin's Last-Modified as a Unix time: nginx's Last-Modified and ETag
        then follow the origin's."""
        if not self.last_modified:
            return self.modified
        try:
            return parsedate_to_datetime(self.last_modified).timestamp()
        except (TypeError, ValueError):
            return self.modified


class Mismatch(OSError):
    """The bytes copied in do not hash to what the caller expected."""


@contextmanager
def held(layout: Layout) -> Iterator[None]:
    """The placement lock; held only for a record and a rename (milliseconds)."""
    with lock.hold(layout.state / "place.lock", "placement lock busy", wait=True):
        yield


@dataclass(frozen=True)
class Item:
    """A verified file and what it is: the whole input of a placement."""

    file: Verified
    key: str
    url: str
    source: str
    name: str | None = None
    replacing: bool = False  # a record (and perhaps a blob) exists for this key
    mirror: mirror_tree.Placement | None = None  # also served at /m/<name>/<path>

    def record(self, now: float) -> store.Artifact:
        return store.Artifact(
            key=self.key,
            url=self.url,
            name=self.name or keys.name(self.key),
            size=self.file.size,
            sha256=self.file.sha256,
            fetched_at=now,
            etag=self.file.etag,
            last_modified=self.file.last_modified,
            source=self.source,
            disposition=self.file.disposition,
            redirects=self.file.redirects,
            final_url=self.file.final_url,
        )


def install(layout: Layout, conn: sqlite3.Connection, item: Item) -> store.Artifact:
    """Record one verified file and rename it into www/b/; return the record."""
    return install_many(layout, conn, [item])[0]


def install_many(
    layout: Layout, conn: sqlite3.Connection, items: Sequence[Item]
) -> list[store.Artifact]:
    """install() for a group: one lock, one transaction, then the renames.

    Replaced blobs go first, so a crash between the steps leaves a record without
    its blob (sync fetches it again), never a blob its record does not describe.
    Every file is durable before its rename: files not yet fsynced are flushed by one
    syncfs for the group, and so are the renames after them (one call, not an fsync
    per file and per directory).
    """
    now = time.time()
    records = [i.record(now) for i in items]
    unsynced = [i.file.path for i in items if not i.file.synced]
    grouped = len(unsynced) >= GROUP_SYNC
    if grouped:
        atomic.sync_filesystem(layout.partial)
    else:
        for path in unsynced:  # one or two: their own fsyncs cost less than a syncfs
            atomic.fsync_file(path)
    with held(layout):
        for i in items:
            if i.replacing:
                mirror_tree.unlink_key(layout, conn, i.key)
                tree.remove(layout, i.key)
        store.put_artifacts(conn, records)
        mirror_tree.record(conn, [(i.key, i.mirror) for i in items if i.mirror])
        for i in items:
            tree.place(layout, i.file.path, i.key, i.file.mtime, durable=not grouped)
            if i.mirror:
                mirror_tree.link(layout, i.key, i.mirror.ref, durable=not grouped)
        if grouped:
            atomic.sync_filesystem(layout.partial)
    return records


def link_mirror(
    layout: Layout, conn: sqlite3.Connection, key: str, m: mirror_tree.Placement
) -> bool:
    """Serve an artifact already in the tree at /m/<name>/<path> too (a hard link to its
    blob); False when the blob is not there."""
    with held(layout):
        if tree.stat_blob(layout, key) is None:
            return False
        mirror_tree.record(conn, [(key, m)])
        mirror_tree.link(layout, key, m.ref)
    return True


def unlink_mirror(layout: Layout, conn: sqlite3.Connection, refs: Sequence[MirrorRef]) -> None:
    """Stop serving these mirror paths (their artifacts stay)."""
    with held(layout):
        mirror_tree.unlink(layout, refs)
        for ref in refs:
            mirror_tree.forget_ref(conn, ref)


def remove(layout: Layout, conn: sqlite3.Connection, key: str) -> None:
    """Take an artifact out of the tree: its mirror links, its blob, then its record.

    Links go first: a hard link would keep serving the bytes after the blob is gone.
    A crash between the steps leaves a record without its blob (sync fetches it again
    or prunes it again), never a served file without its record.
    """
    with held(layout):
        mirror_tree.unlink_key(layout, conn, key)
        tree.remove(layout, key)
        store.delete_artifact(conn, key)
        mirror_tree.forget(conn, key)


def copy_in(
    layout: Layout,
    src: BinaryIO,
    part: Path,
    expect_sha256: str | None,
    *,
    durable: bool = True,
) -> Verified:
    """Copy a stream into the partial file `part`, hashed (and fsynced); raise Mismatch (and
    remove it) when `expect_sha256` is given and differs. For bytes that come from
    this host (a wheelhouse, an upload, a bundle) rather than from an origin.

    Hashing runs in a helper thread (hashlib releases the GIL), overlapping the next read
    and this write. `durable=False` leaves the flush to install_many, which makes a
    group durable with one syncfs instead of an fsync per file."""
    part.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    size = 0
    try:
        # Durable copies start an fdatasync in the background every FLUSH_EVERY bytes, so
        # the disk writes while the stream arrives (an upload) and the final fsync is short.
        with part.open("wb", buffering=0) as dst, ThreadPoolExecutor(2, "copy-in") as helpers:
            pending: Future[None] | None = None
            flushing: Future[None] | None = None
            unflushed = 0
            while chunk := src.read(CHUNK):
                if pending is not None:
                    pending.result()
                pending = helpers.submit(h.update, chunk)
                atomic.write_all(dst.fileno(), chunk)
                size += len(chunk)
                unflushed += len(chunk)
                if durable and unflushed >= FLUSH_EVERY and (flushing is None or flushing.done()):
                    flushing = helpers.submit(os.fdatasync, dst.fileno())
                    unflushed = 0
            if pending is not None:
                pending.result()
            if flushing is not None:
                flushing.result()
            if durable:
                os.fsync(dst.fileno())
        return _checked(part, size, h.hexdigest(), expect_sha256, durable)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


STEP = 64 << 20  # bytes the kernel copies between hashes (a multiple of the page size)


def copy_in_file(
    layout: Layout,
    src: int,
    offset: int,
    size: int,
    part: Path,
    expect_sha256: str | None,
    *,
    durable: bool = True,
) -> Verified:
    """copy_in for `size` bytes at `offset` of an open local file (a bundle on disk): the
    kernel copies them (copy_file_range: no trip through Python), and the copy itself,
    not its source, is hashed from the page cache as it grows, in a helper thread. The
    same contract as copy_in: Mismatch (and no file) when the sha256 differs; an OSError
    (EIO) when the source ends early."""
    part.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    try:
        fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            with ThreadPoolExecutor(1, "sha256") as hasher:
                hashing: Future[None] | None = None
                done = 0
                while done < size:
                    want = min(STEP, size - done)
                    n = 0
                    while n < want:
                        got = os.copy_file_range(src, fd, want - n, offset + done + n)
                        if got == 0:
                            raise OSError(errno.EIO, f"source ended {size - done - n} bytes early")
                        n += got
                    if hashing is not None:
                        hashing.result()
                    hashing = hasher.submit(_hash_window, h, fd, done, n)
                    done += n
                if hashing is not None:
                    hashing.result()
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        return _checked(part, size, h.hexdigest(), expect_sha256, durable)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def _checked(part: Path, size: int, digest: str, expect: str | None, durable: bool) -> Verified:
    """The copy, once its sha256 is the one expected (Mismatch otherwise)."""
    if expect is not None and digest != expect:
        raise Mismatch(f"sha256 is {digest}, expected {expect}")
    return Verified(part, size, digest, synced=durable)


def _hash_window(h: hashlib._Hash, fd: int, start: int, length: int) -> None:
    """Feed bytes [start, start+length) of the file to the hash, straight from the page
    cache (mmap: no copy into Python)."""
    with mmap.mmap(fd, length, access=mmap.ACCESS_READ, offset=start) as window:
        h.update(window)
