"""A center data dir built by the real `withcache sync` (artifacts from a loopback origin,
Python pages from a wheelhouse), with what its pages list read back from a server.

Used by the replica and edge tests: they change the tree between runs (add, prune)
and check that every file a page lists is served with its listed bytes.
"""

from __future__ import annotations

import hashlib
import html.parser
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.conftest import run_withcache
from tests.origin import Origin
from tests.pyindex_upstream import build_wheel
from withcache.replicate import HOST_FILES

JSON_TYPE = "application/vnd.pypi.simple.v1+json"


@dataclass
class Tree:
    """The manifests and wheelhouse of one center, and its data dir."""

    tmp: Path
    origin: Origin
    artifacts: dict[str, str] = field(default_factory=dict)  # name -> origin URL
    bodies: dict[str, bytes] = field(default_factory=dict)

    @property
    def data(self) -> Path:
        return self.tmp / "center"

    @property
    def wheelhouse(self) -> Path:
        return self.tmp / "wheelhouse"

    def add_artifact(self, name: str, size: int) -> str:
        body = os.urandom(size)
        self.bodies[name] = body
        self.artifacts[name] = self.origin.add(f"/dl/{name}", body)
        return self.artifacts[name]

    def remove_artifact(self, name: str) -> None:
        del self.artifacts[name]

    def add_wheel(self, project: str, version: str, payload: int = 0) -> str:
        self.wheelhouse.mkdir(exist_ok=True)
        filename, body, _meta = build_wheel(project, version, payload=os.urandom(payload))
        (self.wheelhouse / filename).write_bytes(body)
        return filename

    def remove_wheel(self, filename: str) -> None:
        (self.wheelhouse / filename).unlink()

    def sync(self) -> None:
        """Write the manifest and run `withcache sync --prune`; fail loudly."""
        self.wheelhouse.mkdir(exist_ok=True)
        lines = ["artifacts:"] + [f"  - {u}" for u in self.artifacts.values()]
        if not self.artifacts:
            lines = ["artifacts: []"]
        lines += ["python:", f"  wheelhouse: [{self.wheelhouse}]"]
        manifest = self.tmp / "center.yaml"
        manifest.write_text("\n".join(lines) + "\n")
        r = run_withcache("sync", "--prune", "--data", str(self.data), "-m", str(manifest))
        assert r.returncode == 0, r.stderr


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href")
        if tag == "a" and href:
            self.hrefs.append(href)


def hrefs(page: str) -> list[str]:
    p = _Links()
    p.feed(page)
    return p.hrefs


@dataclass(frozen=True)
class Listed:
    """A file some page lists: its path, and its sha256 when the page says it."""

    path: str
    sha256: str | None
    page: str  # the page that lists it


def listed(base: str, session: requests.Session | None = None) -> list[Listed]:
    """Every file the server's catalog, index page and Python pages list right now.

    Pages that do not exist yet (a fresh replica) list nothing.
    """
    s = session or requests.Session()
    out: list[Listed] = []
    r = s.get(base + "/catalog.json", timeout=10)
    if r.status_code == 200:
        for a in r.json()["artifacts"]:
            out.append(Listed(a["cache_path"], a["sha256"], "/catalog.json"))
    r = s.get(base + "/", timeout=10)
    if r.status_code == 200:
        out += [Listed(h, None, "/") for h in hrefs(r.text) if h.startswith("/b/")]
    r = s.get(base + "/simple/", headers={"Accept": JSON_TYPE}, timeout=10)
    if r.status_code == 200:
        for p in r.json()["projects"]:
            page = f"/simple/{p['name']}/"
            out.append(Listed(page, None, "/simple/"))
            pr = s.get(base + page, headers={"Accept": JSON_TYPE}, timeout=10)
            if pr.status_code != 200:
                continue  # reported by the caller's HEAD of the page itself
            for f in pr.json()["files"]:
                out.append(Listed(f["url"].split("#")[0], f["hashes"].get("sha256"), page))
    return out


def www_files(data: Path) -> dict[str, bytes]:
    """Every file of the tree under DATA/www/ and its bytes (small test trees only);
    not the files each host writes for itself (metrics)."""
    www = data / "www"
    return {
        str(p.relative_to(www)): p.read_bytes()
        for p in sorted(www.rglob("*"))
        if p.is_file() and str(p.relative_to(www)) not in HOST_FILES
    }


def sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def catalog(data: Path) -> dict[str, dict[str, object]]:
    doc = json.loads((data / "www" / "catalog.json").read_text())
    return {a["cache_path"]: a for a in doc["artifacts"]}
