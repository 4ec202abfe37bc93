"""The manifests as the last sync read them, kept under state/manifests/.

An offline bundle carries them (`withcache export`), so the site that imports it
knows which files were asked for and why; they are copies, not the checkout, so a
later `git pull` that was never synced does not leak into a bundle.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path

from withcache import atomic
from withcache.layout import Layout


def directory(layout: Layout) -> Path:
    return layout.state / "manifests"


def names(files: Iterable[str]) -> dict[str, Path]:
    """A unique plain file name for each manifest path (two dirs may both hold a.yaml)."""
    out: dict[str, Path] = {}
    for f in files:
        path = Path(f)
        name = path.name
        n = 1
        while name in out:
            n += 1
            name = f"{path.stem}-{n}{path.suffix}"
        out[name] = path
    return out


def save(layout: Layout, files: Iterable[str]) -> None:
    """Copy the manifests a sync read; drop copies of files it no longer reads."""
    d = directory(layout)
    d.mkdir(parents=True, exist_ok=True)
    wanted = names(files)
    for name, path in wanted.items():
        try:
            data = path.read_bytes()
        except OSError:
            continue
        with contextlib.suppress(FileNotFoundError):
            if (d / name).read_bytes() == data:
                continue
        atomic.write(d / name, data)
    for old in d.iterdir():
        if old.name not in wanted and old.is_file():
            old.unlink()


def files(layout: Layout) -> list[Path]:
    """The saved copies, in name order."""
    d = directory(layout)
    return sorted(p for p in d.iterdir() if p.is_file()) if d.is_dir() else []
