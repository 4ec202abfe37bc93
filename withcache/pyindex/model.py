"""What the index is made of, as plain data that survives between `sync`'s two halves.

Resolving (before the downloads) decides which files the index should list;
rendering (after them) lists those that actually arrived. The decision is saved
as JSON under state/ so rendering needs neither the resolver nor the upstream.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from withcache import atomic
from withcache.errors import WithcacheError
from withcache.layout import Layout

PLAN_VERSION = 1
Yanked = bool | str  # False, True, or the reason
WHEELHOUSE_HOST = "https://wheelhouse.invalid"  # keys of local files: never fetched


@dataclass(frozen=True)
class Listed:
    """One file as an upstream project page lists it (PEP 503 / PEP 691 fields)."""

    filename: str
    url: str  # absolute, without fragment
    sha256: str | None = None
    requires_python: str | None = None
    yanked: Yanked = False
    metadata: bool | str = False  # PEP 658: False, True (no hash given), or its sha256
    size: int | None = None
    upload_time: str | None = None


@dataclass(frozen=True)
class IndexFile:
    """One file the index should list, and where its bytes (and metadata) come from."""

    project: str  # PEP 503 normalised
    filename: str
    key: str  # the store key of its bytes
    url: str  # where sync fetches it (an upstream URL), or the wheelhouse path
    sha256: str | None  # what the bytes must hash to (None: upstream gave no sha256)
    requires_python: str | None = None
    yanked: Yanked = False
    metadata_key: str | None = None  # the store key of its PEP 658 metadata
    metadata_sha256: str | None = None
    upload_time: str | None = None
    local: bool = False  # a wheelhouse file, copied into the store by render()
    where: str = ""  # the manifest's python: section that asked for it (file:line)

    @property
    def metadata_url(self) -> str:
        return self.url + ".metadata"


@dataclass
class IndexPlan:
    """Every file of every project the index should list."""

    files: list[IndexFile] = field(default_factory=list)

    def projects(self) -> dict[str, list[IndexFile]]:
        out: dict[str, list[IndexFile]] = {}
        for f in self.files:
            out.setdefault(f.project, []).append(f)
        return out


def plan_path(layout: Layout) -> Path:
    return layout.state / "pyindex.json"


def save(layout: Layout, plan: IndexPlan) -> None:
    layout.state.mkdir(parents=True, exist_ok=True)
    doc = {"version": PLAN_VERSION, "files": [asdict(f) for f in plan.files]}
    atomic.write(plan_path(layout), (json.dumps(doc, indent=1) + "\n").encode())


def load(layout: Layout) -> IndexPlan:
    path = plan_path(layout)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise WithcacheError(f"{path}: no resolved index yet; run `withcache sync`") from None
    except (OSError, ValueError) as exc:
        raise WithcacheError(f"{path}: unreadable ({exc}); run `withcache sync`") from None
    if not isinstance(doc, dict) or doc.get("version") != PLAN_VERSION:
        raise WithcacheError(f"{path}: written by another withcache version; run `withcache sync`")
    return IndexPlan([IndexFile(**f) for f in doc["files"]])


def load_or_empty(layout: Layout) -> IndexPlan:
    """load(), or an empty plan before the first sync (the watcher may take a project
    on demand first)."""
    return load(layout) if plan_path(layout).exists() else IndexPlan()
