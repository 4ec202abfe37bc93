"""The Python front door: a static PEP 503/691/658 index under www/simple/.

`sync` calls wanted() before fetching (resolve the python: sections into files to
fetch) and write_index() after (write the pages for the files that arrived); `serve`
includes nginx/simple.conf.j2 in the server block. The work lives in the submodules:

    targets   interpreter x platform -> resolver flags and PEP 425 tag ranking (pure)
    resolve   uv pip compile per target -> pins
    pages     upstream project pages (PEP 691 JSON / PEP 503 HTML) -> Listed
    select    pins + pages + wheelhouse -> IndexFile list (pure)
    wheelhouse local wheels/sdists: scan, hash, copy into the store (placement)
    build     the above, in order -> state/pyindex.json + sync work items
    config    the manifest's python: section, validated
    names     project names and on_demand globs (pure)
    demand    projects taken on demand -> state/ondemand.json
    take      one missed project: resolve, fetch, record, publish its pages
    refresh   revalidate upstream pages (conditional GET); new releases, yanks
    publish   state/pyindex.json + state/ondemand.json + the artifacts table -> www/simple/
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from withcache.layout import Layout
    from withcache.manifest import Manifest
    from withcache.plan import Wanted
    from withcache.store import Artifact

__all__ = ["wanted", "write_index"]


def wanted(
    manifest: Manifest,
    layout: Layout,
    records: dict[str, Artifact],
    *,
    say: Callable[[str], None],
    uv_cache: Path | None = None,
    save: bool = True,
    refresh: bool = False,
) -> list[Wanted]:
    """Resolve the python: sections; the files (and PEP 658 metadata) sync must fetch,
    those of the projects taken on demand included."""
    from withcache.pyindex import build

    return build.wanted(
        manifest, layout, records, say=say, uv_cache=uv_cache, save=save, refresh=refresh
    )


def write_index(manifest: Manifest, layout: Layout, *, prune: bool = False) -> None:
    """Write www/simple/ listing only the resolved files that the store now holds (sync's
    and the projects taken on demand); with no python: section left, take it down.
    The caller holds the sync lock."""
    from withcache.pyindex.demand import record_path
    from withcache.pyindex.publish import render, withdraw

    if manifest.python:
        render(layout, manifest.python, prune=prune)
    elif (layout.www / "simple").exists() or record_path(layout).exists():
        withdraw(layout, prune=prune)
