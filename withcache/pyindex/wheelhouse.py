"""Local wheels and sdists (private packages) added to the index.

They have no origin URL, so each gets a content-addressed key under a reserved host
(`https://wheelhouse.invalid/<sha256>/<filename>`: `.invalid` never resolves, RFC 2606):
a rebuilt file with the same name is a new artifact, never a silent replacement.
They enter the store like everything else: copied under state/partial/, fsynced,
hash-checked, recorded, then renamed into www/b/.
"""

from __future__ import annotations

import hashlib
import sqlite3
import zipfile
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from pathlib import Path
from urllib.parse import quote

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    parse_sdist_filename,
    parse_wheel_filename,
)

from withcache import placement, store
from withcache.errors import Problem
from withcache.layout import Layout
from withcache.pyindex.model import WHEELHOUSE_HOST, IndexFile

SUFFIXES = (".whl", ".tar.gz", ".zip")
CHUNK = 1 << 20


@dataclass(frozen=True)
class LocalDist:
    """One file found in a wheelhouse directory."""

    project: str
    version: str
    path: Path
    sha256: str
    requires_python: str | None

    @property
    def key(self) -> str:
        return f"{WHEELHOUSE_HOST}/{self.sha256}/{quote(self.path.name)}"

    def index_file(self) -> IndexFile:
        return IndexFile(
            project=self.project,
            filename=self.path.name,
            key=self.key,
            url=str(self.path),
            sha256=self.sha256,
            requires_python=self.requires_python,
            local=True,
        )


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def name_version(filename: str) -> tuple[str, str] | None:
    """(normalised project, version) from a wheel or sdist filename, or None."""
    try:
        if filename.endswith(".whl"):
            name, version, _build, _tags = parse_wheel_filename(filename)
        elif filename.endswith((".tar.gz", ".zip")):
            name, version = parse_sdist_filename(filename)
        else:
            return None
    except (InvalidWheelFilename, InvalidSdistFilename):
        return None
    return str(name), str(version)


def requires_python(path: Path) -> str | None:
    """A wheel's Requires-Python (from its METADATA), so the index can say it too."""
    if path.suffix != ".whl":
        return None
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if info.filename.count("/") == 1 and info.filename.endswith(".dist-info/METADATA"):
                    headers = BytesHeaderParser().parsebytes(z.read(info))
                    return headers.get("Requires-Python") or None
    except (OSError, zipfile.BadZipFile):
        return None
    return None


def scan(dirs: tuple[Path, ...], where: str) -> tuple[list[LocalDist], list[Problem]]:
    """Every wheel and sdist in the directories (not recursive), hashed."""
    found: list[LocalDist] = []
    problems: list[Problem] = []
    file, _, line = where.rpartition(":")
    for d in dirs:
        if not d.is_dir():
            problems.append(Problem(file, int(line), f"wheelhouse {d} is not a directory"))
            continue
        for path in sorted(d.iterdir()):
            if not path.name.endswith(SUFFIXES) or not path.is_file():
                continue
            nv = name_version(path.name)
            if nv is None:
                problems.append(
                    Problem(
                        file, int(line), f"wheelhouse file {path} has no valid wheel/sdist name"
                    )
                )
                continue
            found.append(LocalDist(nv[0], nv[1], path, sha256_file(path), requires_python(path)))
    return found, problems


def place(layout: Layout, conn: sqlite3.Connection, f: IndexFile) -> store.Artifact:
    """Copy a wheelhouse file into the store, verified against the hash taken when it
    was scanned; return its record."""
    assert f.local and f.sha256
    part = layout.partial / f"wheelhouse-{f.sha256[:40]}.part"
    try:
        with Path(f.url).open("rb") as src:
            verified = placement.copy_in(layout, src, part, f.sha256)
    except placement.Mismatch:
        raise OSError(f"{f.url} changed while it was being added (sha256 differs)") from None
    try:
        return placement.install(
            layout, conn, placement.Item(verified, key=f.key, url=f.key, source="python")
        )
    finally:
        part.unlink(missing_ok=True)
