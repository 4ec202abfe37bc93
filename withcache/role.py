"""Whose tree a data dir serves: its own (a center), a center's copy (a replica), or
none at all (an edge cache).

A replica's www/ belongs to the center's `replicate`, which marks it with
`state/replica.json`; an edge holds no tree, and `serve --edge` marks it with
`state/edge.json`. Their watchers record hits and misses but do not render an index
(their databases hold no artifacts, so the page would come out empty), and `sync`,
`index` and auto-fill refuse to write there (a replicate would delete what they placed;
an edge serves nothing from www/).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

from withcache.errors import WithcacheError
from withcache.layout import Layout

MARKER = "replica.json"
EDGE_MARKER = "edge.json"


class NotOwnTree(WithcacheError):
    """A command that writes the tree was run on a replica or an edge."""

    exit_code = 2


def marker(layout: Layout) -> Path:
    return layout.state / MARKER


def marker_text(source: Layout) -> str:
    """The marker a replicate of `source` writes: where the tree comes from."""
    origin = f"{socket.gethostname()}:{source.root.resolve()}"
    return json.dumps({"replica_of": origin}) + "\n"


def mark_edge(layout: Layout, center: str) -> None:
    """Say that `layout` is an edge cache of `center` (written by `serve --edge`)."""
    layout.state.mkdir(parents=True, exist_ok=True)
    (layout.state / EDGE_MARKER).write_text(json.dumps({"edge_of": center}) + "\n")


def _read(path: Path, field: str) -> str | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return "an unknown center"  # a damaged marker still marks the data dir
    value = doc.get(field) if isinstance(doc, dict) else None
    return value if isinstance(value, str) else "an unknown center"


def replica_of(layout: Layout) -> str | None:
    """The center this data dir replicates, or None."""
    return _read(marker(layout), "replica_of")


def not_own_tree(layout: Layout) -> str | None:
    """'a replica of X' / 'an edge cache of X', or None for a center."""
    of = replica_of(layout)
    if of is not None:
        return f"a replica of {of}"
    of = _read(layout.state / EDGE_MARKER, "edge_of")
    return None if of is None else f"an edge cache of {of}"


def refuse_writes(layout: Layout, what: str) -> None:
    """Raise NotOwnTree when `layout` is a replica or an edge."""
    role = not_own_tree(layout)
    if role is not None:
        raise NotOwnTree(
            f"{layout.root} is {role}: {what} runs at the center"
            + (", and `withcache replicate` brings the result here" if "replica" in role else "")
            + f" (remove {layout.state}/{MARKER if 'replica' in role else EDGE_MARKER} "
            "to make this a data dir of its own)"
        )
