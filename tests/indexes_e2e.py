"""A private-index cache for tests and the bench: manifests with an indexes: section,
synced, users added, and `withcache serve` (nginx + the upload service) running."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.conftest import run_withcache, start_nginx, stop_nginx
from tests.pyindex_upstream import build_wheel
from withcache.layout import Layout

MANIFEST = """
indexes:
  team:
    read: [alice, ci]
    write: [ci]
    base: mirror
  pub:
    write: [ci]
"""
USERS = {"ci": "ci-secret-1", "alice": "alice-pw-2", "bob": "bob-pw-3"}


@dataclass
class Served:
    """nginx and the upload service over one data dir."""

    url: str
    layout: Layout
    manifests: Path
    proc: subprocess.Popen[bytes]
    users: dict[str, str] = field(default_factory=dict)

    def index_url(self, index: str, user: str | None = None) -> str:
        host = self.url.removeprefix("http://")
        cred = f"{user}:{self.users[user]}@" if user else ""
        return f"http://{cred}{host}/{index}/simple/"

    def auth(self, user: str) -> tuple[str, str]:
        return (user, self.users[user])

    def upload(
        self,
        index: str,
        filename: str,
        body: bytes,
        user: str | None = "ci",
        **fields: str | None,
    ) -> requests.Response:
        """POST the upload API's form, as twine does; `fields` override (None drops one)."""
        return upload(
            self.url + f"/{index}/", filename, body, self.auth(user) if user else None, **fields
        )

    def stop(self) -> None:
        stop_nginx(self.proc)


def form_fields(filename: str, body: bytes) -> dict[str, str]:
    """What twine sends with a file, from its filename."""
    if filename.endswith(".whl"):
        name, version = filename.split("-")[:2]
        filetype = "bdist_wheel"
    else:
        name, _, version = filename.removesuffix(".tar.gz").rpartition("-")
        filetype = "sdist"
    return {
        ":action": "file_upload",
        "protocol_version": "1",
        "metadata_version": "2.1",
        "name": name,
        "version": version,
        "filetype": filetype,
        "pyversion": "py3" if filetype == "bdist_wheel" else "source",
        "sha256_digest": hashlib.sha256(body).hexdigest(),
    }


def upload(
    url: str,
    filename: str,
    body: bytes,
    auth: tuple[str, str] | None,
    **fields: str | None,
) -> requests.Response:
    data = {**form_fields(filename, body), **fields}
    data = {k: v for k, v in data.items() if v is not None}
    return requests.post(
        url, data=data, files={"content": (filename, body)}, auth=auth, timeout=120
    )


def start(
    tmp: Path,
    manifest: str = MANIFEST,
    users: Mapping[str, str] = USERS,
    *,
    max_upload: str = "64M",
    extra_manifests: Mapping[str, str] | None = None,
) -> Served:
    tmp.chmod(0o755)
    lay = Layout(tmp / "data").ensure()
    mdir = tmp / "manifests"
    mdir.mkdir()
    (mdir / "indexes.yaml").write_text(textwrap.dedent(manifest).lstrip())
    for name, text in (extra_manifests or {}).items():
        (mdir / name).write_text(textwrap.dedent(text).lstrip())
    sync(lay, mdir)
    for user, password in users.items():
        r = run_withcache(
            "users", "add", user, "--cost", "4", "--data", str(lay.root), input=password + "\n"
        )
        assert r.returncode == 0, r.stderr
    # the upload service starts with nginx: give both longer than a plain serve
    cache = start_nginx(lay.root, None, "--max-upload", max_upload, timeout=30)
    return Served(cache.url, lay, mdir, cache.proc, dict(users))


def sync(lay: Layout, manifests: Path) -> subprocess.CompletedProcess[str]:
    r = run_withcache("sync", "--data", str(lay.root), "-m", str(manifests), "-q")
    assert r.returncode == 0, r.stderr
    return r


def wheel(name: str, version: str, payload: bytes = b"", **kw: object) -> tuple[str, bytes]:
    filename, body, _meta = build_wheel(name, version, payload=payload, **kw)  # type: ignore[arg-type]
    return filename, body


def snapshot(lay: Layout) -> tuple[object, ...]:
    """Everything a refusal must leave alone: www/ (paths, sizes, bytes) and the DB rows."""
    files = []
    for p in sorted(lay.www.rglob("*")):
        if p.is_file():
            files.append((str(p.relative_to(lay.www)), hashlib.sha256(p.read_bytes()).hexdigest()))
    conn = sqlite3.connect(lay.db)
    try:
        rows = tuple(
            tuple(conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2"))
            for t in ("artifacts", "index_files", "index_audit")
        )
    finally:
        conn.close()
    return tuple(files), rows
