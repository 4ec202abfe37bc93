"""The served tree on disk: atomic placement and removal under www/b/.

Only whole, verified files ever appear under www/: bytes are written under
state/partial/ (same filesystem), fsynced, chmod 0644 (mkstemp-style 0600 files
make nginx's unprivileged worker answer 403) and then renamed into place.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from withcache import keys
from withcache.atomic import fsync_dir
from withcache.layout import Layout


def blob_path(layout: Layout, key: str) -> Path:
    return layout.www / keys.blob_relpath(key)


def stat_blob(layout: Layout, key: str) -> os.stat_result | None:
    try:
        return blob_path(layout, key).stat()
    except (FileNotFoundError, NotADirectoryError):
        return None


def place(
    layout: Layout, partial: Path, key: str, mtime: float | None = None, *, durable: bool = True
) -> Path:
    """Rename a complete, fsynced, verified partial file into www/b/ (atomic). With
    durable=False the caller makes the rename durable itself (a group: one syncfs)."""
    dest = blob_path(layout, key)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _make_readable(layout.www, dest.parent)
    os.chmod(partial, 0o644)
    if mtime is not None:  # nginx's Last-Modified/ETag then follow the origin's
        os.utime(partial, (mtime, mtime))
    os.replace(partial, dest)
    if durable:
        fsync_dir(dest.parent)
    return dest


def remove(layout: Layout, key: str) -> bool:
    """Delete an artifact and the token directories it leaves empty."""
    path = blob_path(layout, key)
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    with contextlib.suppress(FileNotFoundError):  # a wheel's PEP 658 metadata beside it
        (path.parent / "@metadata").unlink()
    top = layout.www / "b"
    parent = path.parent
    while parent != top and top in parent.parents:
        try:
            parent.rmdir()
        except OSError:
            break
        parent = parent.parent
    return True


def _make_readable(top: Path, leaf: Path) -> None:
    """Token directories must be traversable by nginx's worker whatever our umask."""
    d = leaf
    while d != top and top in d.parents:
        mode = d.stat().st_mode
        if mode & 0o755 != 0o755:
            d.chmod(mode | 0o755)
        d = d.parent
