"""The keys the manifests list, for a long-running process (the watcher).

Eviction must never take what a manifest lists, and manifests change under a watcher
that runs for months (`git pull` from a timer). The files are read again when one of
them changed (name, size or mtime); a set that no longer validates keeps the last
good answer, so a broken pull request never turns listed artifacts into evictable ones.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from withcache import manifest
from withcache.errors import ManifestError
from withcache.storeconfig import StoreConfig, one


class Listed:
    """Callable: the listed keys now. `.store` is the store: section of the last good read."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)
        self._seen: tuple[tuple[str, int, int], ...] | None = None
        self.keys: frozenset[str] = frozenset()
        self.store: StoreConfig | None = None
        self.allow_hosts: tuple[str, ...] = ()
        self.error: str | None = None
        self()

    def _signature(self) -> tuple[tuple[str, int, int], ...]:
        sig = []
        for f in manifest.manifest_files(p for p in self.paths if p.exists()):
            try:
                st = os.stat(f)
            except OSError:
                continue
            sig.append((str(f), st.st_size, st.st_mtime_ns))
        return tuple(sig)

    def __call__(self) -> frozenset[str]:
        sig = self._signature()
        if sig == self._seen:
            return self.keys
        self._seen = sig
        if not sig:
            return self.keys
        try:
            m = manifest.load([Path(s[0]) for s in sig])
        except ManifestError as exc:
            self.error = str(exc).splitlines()[0]
            return self.keys
        self.error = None
        self.keys = frozenset(m.listed_keys())
        self.store = one(m.store)
        self.allow_hosts = m.allow_hosts
        return self.keys
