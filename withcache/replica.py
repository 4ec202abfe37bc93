"""What makes a data dir a replica: `state/replica.json`, written by `withcache replicate`.

A replica's www/ belongs to the center's `replicate`: its own watcher records hits and
misses but must not re-render the index (its database holds no artifacts, so the page
would come out empty), and `withcache sync` must not write into it (the next replicate
would delete what it placed).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

from withcache.errors import WithcacheError
from withcache.layout import Layout

MARKER = "replica.json"


class IsReplica(WithcacheError):
    """A command that writes the tree was run on a replica."""

    exit_code = 2


def marker(layout: Layout) -> Path:
    return layout.state / MARKER


def marker_text(source: Layout) -> str:
    """The marker a replicate of `source` writes: where the tree comes from."""
    origin = f"{socket.gethostname()}:{source.root.resolve()}"
    return json.dumps({"replica_of": origin}) + "\n"


def replica_of(layout: Layout) -> str | None:
    """The center this data dir replicates, or None for a data dir of its own."""
    try:
        doc = json.loads(marker(layout).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return "an unknown center"  # a damaged marker still marks a replica
    origin = doc.get("replica_of") if isinstance(doc, dict) else None
    return origin if isinstance(origin, str) else "an unknown center"


def refuse_writes(layout: Layout, what: str) -> None:
    """Raise IsReplica when `layout` is a replica: its tree comes from the center."""
    origin = replica_of(layout)
    if origin is not None:
        raise IsReplica(
            f"{layout.root} is a replica of {origin}: {what} runs at the center, and "
            f"`withcache replicate` brings the result here (remove {marker(layout)} "
            "to make this a data dir of its own)"
        )
