"""Decide what a sync must do: pure, so it is cheap to test and instant to run.

A wanted artifact costs no network when its record exists, its blob is on disk
with the recorded size, and its pin (if any) equals the recorded sha256.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from withcache.mirrors.paths import MirrorRef
from withcache.store import Artifact

PRUNABLE_SOURCES = frozenset({"manifest", "python", "mirror"})


@dataclass(frozen=True)
class Wanted:
    """One artifact some manifest asks for (a URL entry or a resolved package file)."""

    key: str
    url: str
    name: str
    where: str
    sha256: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    source: str = "manifest"
    header_hosts: frozenset[str] = frozenset()  # hosts besides the origin that get headers
    fallbacks: tuple[str, ...] = ()  # more URLs of the same bytes, tried in order after url
    digests: tuple[tuple[str, str], ...] = ()  # pins besides sha256: blake2b, sha512, size
    mirror: MirrorRef | None = None  # also served at /m/<name>/<path>


@dataclass(frozen=True)
class Fetch:
    wanted: Wanted
    reason: str  # new | missing | repin | refresh
    known: Artifact | None = None


@dataclass(frozen=True)
class Remove:
    artifact: Artifact


@dataclass
class Plan:
    fetch: list[Fetch] = field(default_factory=list)
    keep: list[Wanted] = field(default_factory=list)
    remove: list[Remove] = field(default_factory=list)


def plan(
    wanted: Iterable[Wanted],
    records: Mapping[str, Artifact],
    on_disk: Mapping[str, int],
    *,
    refresh: bool = False,
    prune: bool = False,
    repin: Collection[str] = frozenset(),
) -> Plan:
    """Compare what is wanted with what is recorded and on disk. `repin`: keys whose
    held bytes never passed their current pins besides sha256 (fetched again)."""
    out = Plan()
    wanted_keys: set[str] = set()
    for w in wanted:
        wanted_keys.add(w.key)
        rec = records.get(w.key)
        size = on_disk.get(w.key)
        if rec is None:
            out.fetch.append(Fetch(w, "new"))
        elif size != rec.size:
            out.fetch.append(Fetch(w, "missing", rec))
        elif (w.sha256 and w.sha256 != rec.sha256) or w.key in repin:
            out.fetch.append(Fetch(w, "repin", rec))
        elif refresh and not w.sha256:
            out.fetch.append(Fetch(w, "refresh", rec))
        else:
            out.keep.append(w)
    if prune:
        for key, rec in sorted(records.items()):
            if key not in wanted_keys and rec.source in PRUNABLE_SOURCES:
                out.remove.append(Remove(rec))
    return out
