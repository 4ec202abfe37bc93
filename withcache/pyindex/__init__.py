"""The Python front door: a static PEP 503/691/658 index under www/simple/.

`sync` calls wanted() before fetching (resolve the python: sections into files to
fetch) and render() after (write the pages for the files that arrived); `serve`
adds nginx_locations() to the server block. The work lives in the submodules:

    targets   interpreter x platform -> resolver flags and PEP 425 tag ranking (pure)
    resolve   uv pip compile per target -> pins
    pages     upstream project pages (PEP 691 JSON / PEP 503 HTML) -> Listed
    select    pins + pages + wheelhouse -> IndexFile list (pure)
    wheelhouse local wheels/sdists: scan, hash, copy into the store
    build     the above, in order -> state/pyindex.json + sync work items
    publish   state/pyindex.json + the artifacts table -> www/simple/
    locations nginx text
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from withcache.pyindex.locations import nginx_locations

if TYPE_CHECKING:
    from withcache.manifest import Manifest
    from withcache.plan import Wanted
    from withcache.settings import Layout

__all__ = ["nginx_locations", "render", "wanted"]


def wanted(manifest: Manifest, layout: Layout, *, quiet: bool = False) -> list[Wanted]:
    """Resolve the python: sections; the files (and PEP 658 metadata) sync must fetch."""
    from withcache.pyindex import build

    return build.wanted(manifest, layout, quiet=quiet)


def render(manifest: Manifest, layout: Layout) -> None:
    """Write www/simple/ listing only the resolved files that the store now holds;
    with no python: section left, remove it."""
    from withcache.pyindex import build, publish

    if build.configs(manifest):
        publish.render(layout)
    else:
        publish.withdraw(layout)
