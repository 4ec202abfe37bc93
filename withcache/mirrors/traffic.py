"""Requests under /m/ as the watcher and the review loop see them.

A hit is counted for the artifact behind the mirror path (its key, from the rows
placement wrote), so /b/ and /m/ hits of one file add up. A miss is kept under the
key `mirror:<name>/<path>` (kind "mirror"); it is open until www/m/<name>/<path>
exists, and `withcache add --mirror <name> <path>` is how it gets into a manifest.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

from withcache import store
from withcache.mirrors import tree
from withcache.mirrors.paths import MISS_PREFIX, MirrorRef, from_miss_key, from_request

KIND = "mirror"


def tally_hit(
    hits: dict[MirrorRef, store.HitTally], ref: MirrorRef, nbytes: int, when: float
) -> None:
    h = hits.get(ref)
    if h is None:
        hits[ref] = store.HitTally(1, nbytes, when)
        return
    h.count += 1
    h.bytes += nbytes
    if when > h.last:
        h.last = when


def key_hits(
    conn: sqlite3.Connection,
    mirror_hits: dict[MirrorRef, store.HitTally],
    hits: dict[str, store.HitTally],
) -> None:
    """Add hits on mirror paths to their artifacts' hits (paths no row names, such as
    layout.conf, count only in the totals)."""
    for ref, h in mirror_hits.items():
        key = tree.lookup(conn, ref)
        if key is None:
            continue
        have = hits.get(key)
        if have is None:
            hits[key] = store.HitTally(h.count, h.bytes, h.last)
        else:
            have.count += h.count
            have.bytes += h.bytes
            have.last = max(have.last, h.last)


def is_held(www: Path | None, url: str) -> bool:
    """Is the mirror path a miss names (its url: /m/<name>/<path>) served now?"""
    ref = from_request(url)
    return www is not None and ref is not None and (www / ref.relpath).is_file()


def target_key(text: str) -> str | None:
    """The miss key an operator means by `mirror:<name>/<path>` or `/m/<name>/<path>`;
    None when the text is neither (raises ValueError when it is one, malformed)."""
    if text.startswith(MISS_PREFIX):
        ref = from_miss_key(text)
    elif text.startswith("/m/"):
        ref = from_request(text)
    else:
        return None
    if ref is None:
        raise ValueError(f"not a mirror name and path: {text!r}")
    return ref.miss_key


def add_command(url: str) -> str | None:
    """`withcache add --mirror <name> <path>` for a mirror miss's url (/m/<name>/<path>)."""
    ref = from_request(url)
    return None if ref is None else f"withcache add --mirror {ref.name} {ref.path}"


def what(url: str) -> str:
    """A mirror miss for a person: the path and the command that adds it."""
    command = add_command(url)
    return url if command is None else f"{url}  -> {command}"


def snippet(urls: Iterable[tuple[str, str]]) -> list[str]:
    """Manifest lines for mirror misses ((url, note) pairs), grouped by mirror."""
    by_mirror: dict[str, list[tuple[str, str]]] = {}
    for url, note in urls:
        ref = from_request(url)
        if ref is not None:
            by_mirror.setdefault(ref.name, []).append((ref.path, note))
    if not by_mirror:
        return []
    out = ["mirrors:  # merge into each mirror's files: list"]
    for name, files in sorted(by_mirror.items()):
        out += [f"  {name}:", "    files:"]
        out += [f"      - {path}  # {note}" for path, note in files]
    return out
