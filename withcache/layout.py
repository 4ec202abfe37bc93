"""Where everything lives in the data dir (DESIGN.md, The data dir)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def default_data_dir() -> Path:
    return Path(os.environ.get("WITHCACHE_DATA", "data"))


@dataclass(frozen=True)
class Layout:
    """Paths inside one data dir; passed down instead of a global config."""

    root: Path

    @property
    def www(self) -> Path:
        return self.root / "www"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def db(self) -> Path:
        return self.state / "withcache.db"

    @property
    def partial(self) -> Path:
        return self.state / "partial"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def artifact_headers(self) -> Path:
        """The generated nginx maps of per-artifact headers (artifact_headers.py)."""
        return self.run / "artifact-headers.conf"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def access_log(self) -> Path:
        return self.log_dir / "access.log"

    @property
    def lock(self) -> Path:
        return self.state / "sync.lock"

    def ensure(self) -> Layout:
        """Create the directories; www/ and b/ world-readable so nginx's worker can read them."""
        for d in (self.www, self.www / "b", self.state, self.partial, self.run, self.log_dir):
            d.mkdir(parents=True, exist_ok=True)
        for d in (self.root, self.www, self.www / "b"):
            try:
                d.chmod(d.stat().st_mode | 0o755)
            except PermissionError:
                pass
        return self
