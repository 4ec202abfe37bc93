"""Mirrors in a sync: the files it wants, which held ones need their pins checked again,
and what it publishes afterwards (links for files already held, layout.conf).

`sync.run()` calls these under its lock: wanted() and repin() while planning,
publish() after the downloads, beside the Python index's pages.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path

from withcache import atomic, keys, placement, store
from withcache.layout import Layout
from withcache.manifest import Manifest
from withcache.mirrors import config, gentoo
from withcache.mirrors import tree as mirror_tree
from withcache.mirrors.sources import pins_text
from withcache.plan import Wanted

SOURCE = "mirror"  # artifacts.source of a mirror file a manifest lists (prunable)


def wanted(manifest: Manifest) -> list[Wanted]:
    """Every listed mirror file as a sync work item: its first source as the URL, the
    others as fallbacks, its pins, and its place under /m/."""
    return [
        Wanted(
            key=f.key,
            url=f.url,
            name=keys.name(f.key),
            where=f.where,
            sha256=f.pins.sha256,
            source=SOURCE,
            fallbacks=f.urls[1:],
            digests=f.pins.digests(),
            mirror=f.ref,
        )
        for f in config.files(manifest.mirrors)
    ]


def repin(db: Path, wanted: Sequence[Wanted]) -> set[str]:
    """Keys whose held bytes never passed the pins (BLAKE2B, SHA512, size) they have now:
    pins added or changed after the file was fetched. sync fetches those again."""
    pinned = [w for w in wanted if w.mirror is not None and w.digests]
    if not pinned:
        return set()
    passed = {(r.ref, r.key): r.pins for r in mirror_tree.read_rows(db)}
    return {
        w.key
        for w in pinned
        if w.mirror is not None and passed.get((w.mirror, w.key)) != pins_text(w.digests)
    }


def publish(layout: Layout, manifest: Manifest, say: Callable[[str], None]) -> None:
    """After the downloads: link every listed file the store holds but /m/ does not
    serve yet (fetched earlier through /b/, or a link lost in a crash), drop links whose
    artifact is gone, and write each Gentoo mirror's layout.conf."""
    _layout_confs(layout, manifest)
    if not manifest.mirrors and not (layout.www / "m").exists():
        return
    conn = store.connect(layout.db)
    try:
        records = store.artifacts(conn)
        rows = {r.ref: r for r in mirror_tree.rows(conn)}
        for f in config.files(manifest.mirrors):
            rec = records.get(f.key)
            row = rows.get(f.ref)
            kept = row if row is not None and row.key == f.key else None
            if rec is None or (kept and mirror_tree.is_linked(layout, f.key, f.ref)):
                continue
            m = mirror_tree.Placement(
                f.ref, kept.served_by if kept else rec.url, kept.pins if kept else ""
            )
            if placement.link_mirror(layout, conn, f.key, m):
                say(f"linked {f.ref.uri}")
        stale = [
            r.ref
            for r in rows.values()
            if r.key not in records or not (layout.www / keys.blob_relpath(r.key)).exists()
        ]
        if stale:
            placement.unlink_mirror(layout, conn, stale)
    finally:
        conn.close()


def _layout_confs(layout: Layout, manifest: Manifest) -> None:
    """distfiles/layout.conf for each `layout: gentoo` mirror, and none for the others."""
    gentoo_names = {m.name for m in manifest.mirrors if m.layout == gentoo.LAYOUT}
    top = layout.www / "m"
    for name in sorted(gentoo_names):
        path = top / name / gentoo.LAYOUT_CONF_PATH
        with contextlib.suppress(OSError):
            if path.read_text() == gentoo.LAYOUT_CONF:
                continue
        for d in (top, top / name, path.parent):
            d.mkdir(exist_ok=True)
            d.chmod(0o755)
        atomic.write(path, gentoo.LAYOUT_CONF.encode())
    if top.is_dir():
        for path in top.glob(f"*/{gentoo.LAYOUT_CONF_PATH}"):
            if path.parent.parent.name not in gentoo_names:
                path.unlink(missing_ok=True)
