"""Writing a file whole or not at all: the one temp-and-rename helper.

Readers (nginx, a running shim, the next sync) see the old file or the new one, never
half of either: the bytes go to a temp file in the same directory, are fsynced, get
their mode (mkstemp makes 0600 files, and nginx's unprivileged worker answers 403 for
those), and are renamed over the target; the directory is fsynced so the rename
survives a crash. On any error the temp file is removed and the target is untouched.

Also here: write_all, the way every buffered write of bytes bound for the store
reaches the page cache (in pieces; WRITE_PIECE says why), and the fsync helpers.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

# The most one write() hands the page cache. The kernel sizes a new page-cache folio
# after the write that fills it, so a 1 MiB write asks for 1 MiB of contiguous memory.
# On a VM whose host takes back large free blocks (free page reporting), such blocks
# must be faulted in again page by page: measured here, 200 files written 1 MiB at a
# time took 0.5-0.9 s in every other run, 0.18 s in the rest; in pieces of 256 KiB or
# less, 0.15-0.27 s in every run (1 GiB: 1.9-6.2 s against 0.9-1.1 s).
WRITE_PIECE = 256 << 10


def write(
    path: Path, data: bytes, *, mode: int = 0o644, durable: bool = True, group: int | None = None
) -> None:
    """Replace `path` with `data`. `durable=False` skips both fsyncs, for files that are
    cheap to lose (a resume hint), never for what is served or recorded. `group` is set
    before the rename, so a reader in that group never sees the file without access."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        if group is not None:
            os.chown(tmp, -1, group)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(path.parent)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write all of `data` at the file's position, at most WRITE_PIECE bytes per write()
    (WRITE_PIECE says why), retrying short writes."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view[:WRITE_PIECE]) :]


def write_text(path: Path, text: str, *, mode: int = 0o644) -> None:
    """write() for text, newlines exactly as given."""
    write(path, text.encode("utf-8"), mode=mode)


def fsync_file(path: Path) -> None:
    """Make a written file's bytes durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_filesystem(path: Path) -> None:
    """Make everything written to the filesystem holding `path` durable, with one call.

    syncfs(2) on Linux: for a group of files, one flush instead of an fsync each (the
    placer's groups of small downloads). Elsewhere, os.sync().
    """
    syncfs = _syncfs()
    if syncfs is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        if syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs: {os.strerror(err)}", str(path))
    finally:
        os.close(fd)


@functools.cache
def _syncfs() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn: Callable[[int], int] = libc.syncfs
    except (OSError, AttributeError):
        return None
    return fn
