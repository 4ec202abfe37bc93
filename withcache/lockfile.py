"""The lock file: trust on first use, made explicit and reviewable.

`withcache lock` writes `withcache.lock` next to the manifests: one line per artifact
whose bytes no manifest pins (an unpinned URL entry, a file of the Python index, one
taken on demand), `<sha256>  <key>`, sorted, so a pull request shows exactly which
bytes changed. `withcache sync --locked` then holds every download to it: a file whose
bytes (or whose upstream listing) differ from the lock, or that the lock does not list,
is refused with the lock's file:line, and the bytes already served stay as they are.
That catches an origin that changes a file in place under the same URL.
`withcache check --locked` checks the lock against the manifests (and against the
data dir's records, when there is one) without any network request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from withcache import atomic
from withcache.errors import ManifestError, Problem
from withcache.manifest import Manifest
from withcache.plan import Fetch, Plan, Wanted
from withcache.store import Artifact

NAME = "withcache.lock"
# besides unpinned manifest entries; mirror files are locked whatever their pins
LOCKED_SOURCES = frozenset({"python", "ondemand", "mirror"})
HEADER = (
    "# withcache.lock: the sha256 of every unpinned artifact and every Python index file,\n"
    "# as first fetched (`withcache lock`). Review changes in pull requests.\n"
    "# `withcache sync --locked` and `withcache check --locked` refuse bytes that differ.\n"
)
_LINE = re.compile(r"^([0-9a-f]{64})  (\S+)$")


@dataclass(frozen=True)
class Entry:
    sha256: str
    line: int


@dataclass(frozen=True)
class Lock:
    """A parsed lock file: key -> (sha256, line)."""

    path: Path
    entries: Mapping[str, Entry]

    def where(self, key: str) -> str:
        return f"{self.path}:{self.entries[key].line}"


def path_for(manifest_files: Sequence[str | Path]) -> Path:
    """Next to the manifests: the directory of the first manifest file."""
    if not manifest_files:
        return Path(NAME)
    return Path(manifest_files[0]).parent / NAME


def locked_records(manifest: Manifest, records: Mapping[str, Artifact]) -> dict[str, str]:
    """key -> sha256 of what the lock holds: the records of unpinned manifest entries
    and of Python index files (synced or taken on demand)."""
    entries = manifest.by_key()
    out = {}
    for key, rec in records.items():
        entry = entries.get(key)
        if (entry is not None and entry.sha256 is None) or (
            entry is None and rec.source in LOCKED_SOURCES
        ):
            out[key] = rec.sha256
    return dict(sorted(out.items()))


def render(locked: Mapping[str, str]) -> str:
    return HEADER + "".join(f"{sha}  {key}\n" for key, sha in sorted(locked.items()))


def write(path: Path, locked: Mapping[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, render(locked))


def parse(text: str, path: Path) -> Lock:
    """A lock file's entries; ManifestError with every malformed line."""
    entries: dict[str, Entry] = {}
    problems: list[Problem] = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r")
        if not line.strip() or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if m is None:
            problems.append(Problem(str(path), n, "expected '<sha256>  <URL>' (two spaces)"))
            continue
        sha, key = m.groups()
        if key in entries:
            problems.append(
                Problem(str(path), n, f"{key} is locked twice (also line {entries[key].line})")
            )
            continue
        entries[key] = Entry(sha, n)
    if problems:
        raise ManifestError(problems)
    return Lock(path, entries)


def load(path: Path) -> Lock:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(
            [Problem(str(path), 0, "no lock file; create it with `withcache lock` and commit it")]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError([Problem(str(path), 0, f"cannot read: {exc}")]) from None
    return parse(text, path)


def needs_entry(w: Wanted) -> bool:
    """A manifest pin already fixes the bytes; everything else must be in the lock."""
    return not (w.source == "manifest" and w.sha256)


def enforce(
    plan: Plan, lock: Lock, records: Mapping[str, Artifact]
) -> tuple[Plan, list[tuple[Wanted, str]]]:
    """The plan with every download held to the lock (pure), and what it refuses.

    A download keeps going only when the lock lists it: it must then hash to the locked
    sha256 (checked before placement, so a mismatch changes nothing served). A Python
    file whose upstream listing names another sha256 is refused without a request. A
    kept artifact whose record differs from the lock is reported (it stays served)."""
    name = lock.path.name
    refused: list[tuple[Wanted, str]] = []
    fetch: list[Fetch] = []
    for f in plan.fetch:
        w = f.wanted
        if not needs_entry(w):
            fetch.append(f)
            continue
        entry = lock.entries.get(w.key)
        if entry is None:
            refused.append((w, f"not in {name}; run `withcache lock` and review it"))
            continue
        where = lock.where(w.key)
        if w.sha256 and w.sha256 != entry.sha256:
            refused.append(
                (
                    replace(w, where=where),
                    f"the upstream lists sha256 {w.sha256}, the lock says {entry.sha256}; "
                    "not fetched",
                )
            )
            continue
        fetch.append(replace(f, wanted=replace(w, sha256=entry.sha256, where=where)))
    for w in plan.keep:
        if not needs_entry(w):
            continue
        entry = lock.entries.get(w.key)
        rec = records.get(w.key)
        if entry is None:
            refused.append((w, f"not in {name}; run `withcache lock` and review it"))
        elif rec is not None and rec.sha256 != entry.sha256:
            refused.append(
                (
                    replace(w, where=lock.where(w.key)),
                    f"the cache holds sha256 {rec.sha256}, the lock says {entry.sha256}",
                )
            )
    return Plan(fetch=fetch, keep=plan.keep, remove=plan.remove), refused


def check(lock: Lock, manifest: Manifest, records: Mapping[str, Artifact] | None) -> list[Problem]:
    """`check --locked`: every unpinned entry is locked, no pin contradicts the lock,
    and (given the data dir's records) every byte the cache holds is the locked one."""
    problems: list[Problem] = []
    for e in manifest.entries:
        entry = lock.entries.get(e.key)
        if e.sha256 is None and entry is None:
            problems.append(Problem(e.file, e.line, f"{e.url} is not in {lock.path}"))
        elif e.sha256 is not None and entry is not None and entry.sha256 != e.sha256:
            problems.append(
                Problem(
                    str(lock.path),
                    entry.line,
                    f"{e.key}: the lock says {entry.sha256}, {e.where} pins {e.sha256}",
                )
            )
    if records is not None:
        declared = manifest.by_key()
        for key, sha in locked_records(manifest, records).items():
            entry = lock.entries.get(key)
            if entry is None and key not in declared:  # (an entry's is reported above)
                problems.append(
                    Problem(str(lock.path), 0, f"{key}: held by the cache, not in the lock")
                )
            elif entry is not None and entry.sha256 != sha:
                problems.append(
                    Problem(
                        str(lock.path),
                        entry.line,
                        f"{key}: the cache holds sha256 {sha}, the lock says {entry.sha256}",
                    )
                )
    return problems
