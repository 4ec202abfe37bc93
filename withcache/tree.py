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
    make_dirs(layout.www, dest.parent)
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
    remove_empty_dirs(path.parent, layout.www / "b")
    return True


def remove_empty_dirs(start: Path, top: Path) -> None:
    """Remove `start` and its parents while they are empty, stopping below `top`."""
    d = start
    while d != top and top in d.parents:
        try:
            d.rmdir()
        except OSError:
            return
        d = d.parent


def make_dirs(top: Path, leaf: Path) -> None:
    """Create the directories below `top` down to `leaf` (token directories, a mirror
    link's parents), each traversable by nginx's worker whatever our umask (mode 0755
    set after mkdir). Directories that exist are left as they are: we made them, or
    layout.ensure() did."""
    missing = []
    d = leaf
    while d != top and not d.is_dir():
        missing.append(d)
        d = d.parent
    for d in reversed(missing):
        try:
            os.mkdir(d)
        except FileExistsError:
            continue  # another writer made it a moment ago
        os.chmod(d, 0o755)
