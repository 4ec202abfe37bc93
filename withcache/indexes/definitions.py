"""What `withcache sync` does for the indexes: publish the definitions, the files
nginx authenticates against, and every index's pages."""

from __future__ import annotations

from withcache import store
from withcache.indexes import model, pages, users
from withcache.indexes.config import IndexConfig
from withcache.layout import Layout


def publish(layout: Layout, configs: tuple[IndexConfig, ...]) -> bool:
    """Bring state/indexes.json, state/auth/ and www/<index>/ in line with the manifests;
    True when the definitions changed (nginx's configuration then follows them). An
    index that left the manifests loses its pages; its files and records stay."""
    indexes = [model.Index.of(c) for c in configs]
    before = model.load(layout)
    if indexes:
        changed = model.save(layout, indexes)
    else:
        changed = bool(before)
        model.path(layout).unlink(missing_ok=True)
    users.write_auth_files(layout, indexes)
    conn = store.connect(layout.db)
    try:
        for ix in indexes:
            pages.publish_all(layout, conn, ix)
    finally:
        conn.close()
    for name in set(before) - {ix.name for ix in indexes}:
        with pages.publishing(layout, name):
            pages.withdraw(layout, name)
    return changed
