"""What an uploaded file is, checked before anything is placed.

A file enters an index only when its name parses (a wheel, or a PEP 625 sdist:
`{name}-{version}.tar.gz`), it opens as what its name says (a zip with one
`*.dist-info/METADATA`, or a gzip'd tar read to its end with `{name}-{version}/PKG-INFO`)
and the project and version agree everywhere they are given: the filename, the
file's own metadata and, over HTTP, the form. Each refusal says why, in words twine
and uv show to the person uploading.
"""

from __future__ import annotations

import re
import tarfile
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from pathlib import Path

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from withcache.errors import WithcacheError

MAX_METADATA = 4 << 20  # a METADATA larger than this is not metadata
FILETYPES = {"bdist_wheel": "wheel", "sdist": "sdist"}
_UNSAFE = re.compile(r"[/\\%\x00-\x1f\x7f]")


class Refused(WithcacheError):
    """An upload that is not taken; `status` is its HTTP answer."""

    status = 400


class BadUpload(Refused):
    """Not a wheel or sdist, a mismatch, a truncated file, a wrong digest: 400."""


class Conflict(Refused):
    """The index already has a file of this name with other bytes: 409."""

    status = 409


@dataclass(frozen=True)
class Dist:
    """A distribution file as its name and its metadata describe it."""

    filename: str
    kind: str  # "wheel" | "sdist"
    project: str  # PEP 503 normalised
    version: str  # normalised (PEP 440)
    metadata: bytes  # METADATA (wheel) or PKG-INFO (sdist), as in the file
    requires_python: str | None


@dataclass(frozen=True)
class Named:
    """What a filename alone says."""

    kind: str
    project: str
    version: str


def filename_problem(filename: str) -> str | None:
    """Why `filename` cannot be a file's name in an index (path tricks first)."""
    if not filename:
        return "the file has no name"
    if _UNSAFE.search(filename) or filename in {".", ".."} or filename.startswith("."):
        return f"unsafe filename {filename!r}: no path, no '%', no control characters"
    if len(filename.encode()) > 255:
        return "the filename is longer than 255 bytes"
    return None


def parse_name(filename: str) -> Named:
    """Project and version from a wheel or PEP 625 sdist filename, or BadUpload."""
    problem = filename_problem(filename)
    if problem:
        raise BadUpload(problem)
    try:
        if filename.endswith(".whl"):
            name, version, _build, _tags = parse_wheel_filename(filename)
            return Named("wheel", str(name), str(version))
        if filename.endswith(".tar.gz"):
            stem = filename[: -len(".tar.gz")]
            if stem.count("-") != 1:
                raise InvalidSdistFilename(f"{filename!r}: expected NAME-VERSION.tar.gz")
            name, version = parse_sdist_filename(filename)
            return Named("sdist", str(name), str(version))
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion) as exc:
        raise BadUpload(f"invalid filename: {exc}") from None
    raise BadUpload(
        f"{filename!r} is not a wheel (.whl) or an sdist (.tar.gz, PEP 625); nothing else is taken"
    )


def inspect(path: Path, filename: str) -> Dist:
    """Open the file as what its name says, read its metadata, check they agree."""
    named = parse_name(filename)
    raw = _wheel_metadata(path, named) if named.kind == "wheel" else _sdist_metadata(path, named)
    headers = BytesHeaderParser().parsebytes(raw)
    meta_name = headers.get("Name")
    meta_version = headers.get("Version")
    if not meta_name or not meta_version:
        raise BadUpload(f"{filename}: the metadata has no Name or no Version")
    if canonicalize_name(meta_name) != named.project:
        raise BadUpload(
            f"name mismatch: the filename says {named.project!r}, the metadata {meta_name!r}"
        )
    if not same_version(meta_version, named.version):
        raise BadUpload(
            f"version mismatch: the filename says {named.version!r}, the metadata {meta_version!r}"
        )
    return Dist(
        filename,
        named.kind,
        named.project,
        named.version,
        raw,
        headers.get("Requires-Python") or None,
    )


def check_form(dist: Dist, form: Mapping[str, str]) -> None:
    """The upload form (twine's and uv's fields) must say what the file says."""
    action = form.get(":action")
    if action != "file_upload":
        raise BadUpload(f"unsupported :action {action!r}; only file_upload is accepted")
    name = form.get("name")
    if not name:
        raise BadUpload("the form has no 'name'")
    if canonicalize_name(name) != dist.project:
        raise BadUpload(f"name mismatch: the form says {name!r}, the file {dist.project!r}")
    version = form.get("version")
    if not version:
        raise BadUpload("the form has no 'version'")
    if not same_version(version, dist.version):
        raise BadUpload(f"version mismatch: the form says {version!r}, the file {dist.version!r}")
    filetype = form.get("filetype")
    if filetype and FILETYPES.get(filetype, filetype) != dist.kind:
        raise BadUpload(f"filetype mismatch: the form says {filetype!r}, the file is a {dist.kind}")


def check_digest(form: Mapping[str, str], sha256: str) -> None:
    """`sha256_digest`, when sent, must be the body's."""
    claimed = form.get("sha256_digest", "").strip().lower()
    if claimed and claimed != sha256:
        raise BadUpload(f"digest mismatch: sha256_digest is {claimed}, the file's is {sha256}")


def same_version(a: str, b: str) -> bool:
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return False


def _wheel_metadata(path: Path, named: Named) -> bytes:
    try:
        with zipfile.ZipFile(path) as z:
            found = [
                i
                for i in z.infolist()
                if i.filename.count("/") == 1 and i.filename.endswith(".dist-info/METADATA")
            ]
            found = [i for i in found if _dir_project(i.filename) == named.project] or found
            if len(found) != 1:
                raise BadUpload(
                    f"the wheel has {'no' if not found else 'more than one'} *.dist-info/METADATA"
                )
            if found[0].file_size > MAX_METADATA:
                raise BadUpload("the wheel's METADATA is implausibly large")
            return z.read(found[0])
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        raise BadUpload(f"not a readable wheel (truncated or not a zip): {exc}") from None


def _dir_project(member: str) -> str:
    stem = member.split("/", 1)[0].removesuffix(".dist-info")
    return canonicalize_name(stem.rsplit("-", 1)[0])


def _sdist_metadata(path: Path, named: Named) -> bytes:
    """PKG-INFO of the top directory; the whole archive is read, so a truncated one fails."""
    found: bytes | None = None
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                parts = member.name.split("/")
                if len(parts) == 2 and parts[1] == "PKG-INFO" and member.isfile():
                    top = parts[0].rsplit("-", 1)
                    if len(top) == 2 and canonicalize_name(top[0]) == named.project:
                        if member.size > MAX_METADATA:
                            raise BadUpload("the sdist's PKG-INFO is implausibly large")
                        f = tar.extractfile(member)
                        found = f.read() if f else None
    except (tarfile.TarError, zlib.error, EOFError, OSError) as exc:
        raise BadUpload(f"not a readable sdist (truncated or not a .tar.gz): {exc}") from None
    if found is None:
        raise BadUpload(f"the sdist has no {named.project}-{named.version}/PKG-INFO")
    return found
