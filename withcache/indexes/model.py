"""What `withcache sync` publishes about the indexes, for the processes that serve them.

nginx's configuration (rendered by `serve` and `nginx-config`), the upload service
and `withcache users` read state/indexes.json instead of the manifests: they run on
the cache-host, where the manifests may not be. The file says only what the
manifests say (names and user lists), never a secret.

Files uploaded to an index get keys under a reserved host, `https://index.invalid/`
(RFC 2606: never resolves), so a file is never fetched from anywhere and its key
names its index. The index segment is padded with `~` (not allowed in index names)
to a multiple of three bytes, so every token of an index starts with the same
base64 text: nginx tells an index's files apart by that prefix alone.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from withcache import atomic, keys
from withcache.errors import WithcacheError
from withcache.layout import Layout

if TYPE_CHECKING:
    from withcache.indexes.config import IndexConfig  # parsing needs yaml: serve does not

VERSION = 1
HOST = "https://index.invalid/"
# Every index file's token starts with this (the 21 bytes before "/" encode to 28
# characters): nginx refuses such tokens under /b/, so they are served only under
# their index's own path, with its read rule.
PRIVATE_TOKEN_PREFIX = keys.token(HOST[:-1])[:28]
SOURCE = "upload"


@dataclass(frozen=True)
class Index:
    """One published index definition."""

    name: str
    read: tuple[str, ...] | None  # None: anyone
    write: tuple[str, ...]
    base: str | None = None
    where: str = ""

    @classmethod
    def of(cls, cfg: IndexConfig) -> Index:
        return cls(cfg.name, cfg.read, cfg.write, cfg.base, cfg.where)

    @property
    def open(self) -> bool:
        return self.read is None

    @property
    def readers(self) -> tuple[str, ...]:
        """Who may read a restricted index: its readers and its writers."""
        return tuple(dict.fromkeys((*(self.read or ()), *self.write)))

    def may_read(self, user: str | None) -> bool:
        return self.open or (user is not None and user in self.readers)

    def may_write(self, user: str | None) -> bool:
        return user is not None and user in self.write

    @property
    def segment(self) -> str:
        """The name as it appears in keys: padded so the key prefix is 3-byte aligned."""
        head = len(HOST) + len(self.name) + 1
        return self.name + "~" * (-head % 3)

    @property
    def token_prefix(self) -> str:
        """The base64 text every token of this index's files starts with."""
        return keys.token(f"{HOST}{self.segment}/")

    def key(self, sha256: str, filename: str) -> str:
        """The store key of one uploaded file: its index, its bytes and its name."""
        return f"{HOST}{self.segment}/{sha256}/{quote(filename, safe='')}"

    def href(self, key: str, filename: str) -> str:
        """Where the index's pages link a file: under the index, never under /b/."""
        return f"/{self.name}/{keys.token_dir(key)}/{quote(filename, safe='')}"


def path(layout: Layout) -> Path:
    return layout.state / "indexes.json"


def save(layout: Layout, indexes: list[Index]) -> bool:
    """Write the definitions (only when they change); True if they did."""
    doc = {"version": VERSION, "indexes": [asdict(ix) for ix in indexes]}
    data = (json.dumps(doc, indent=1) + "\n").encode()
    p = path(layout)
    try:
        if p.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    layout.state.mkdir(parents=True, exist_ok=True)
    atomic.write(p, data)
    return True


def load(layout: Layout) -> dict[str, Index]:
    """The published definitions by name; none when sync has published none."""
    p = path(layout)
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise WithcacheError(f"{p}: unreadable ({exc}); run `withcache sync`") from None
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        raise WithcacheError(f"{p}: written by another withcache version; run `withcache sync`")
    out = {}
    for d in doc["indexes"]:
        read = tuple(d["read"]) if d["read"] is not None else None
        out[d["name"]] = Index(
            d["name"], read, tuple(d["write"]), d.get("base"), d.get("where", "")
        )
    return out


def get(layout: Layout, name: str) -> Index:
    """One index by name, or a clear error naming the ones there are."""
    indexes = load(layout)
    try:
        return indexes[name]
    except KeyError:
        known = (
            ", ".join(sorted(indexes)) or "none; add an indexes: section and run `withcache sync`"
        )
        raise IndexNotFound(f"no index named {name!r} (indexes: {known})") from None


class IndexNotFound(WithcacheError):
    exit_code = 2
