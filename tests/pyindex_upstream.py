"""A fake upstream package index for the pyindex tests and bench: wheels built here by
hand (dist-info METADATA/WHEEL/RECORD, no build backend, no network) and served as a
static PEP 691 JSON and PEP 503 HTML index by tests/origin.py's loopback server.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.origin import Origin

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
ZIP_DATE = (2024, 1, 1, 0, 0, 0)


def normalize(name: str) -> str:
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class Dist:
    """One file of the fake upstream: its bytes and what the index says about it."""

    project: str
    version: str
    filename: str
    body: bytes
    metadata: bytes
    requires_python: str | None = None
    yanked: bool | str = False
    pep658: bool = False
    lie_about_hash: bool = False  # list a sha256 that the served bytes do not have

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()

    @property
    def listed_sha256(self) -> str:
        return (
            hashlib.sha256(b"not " + self.body).hexdigest()
            if self.lie_about_hash
            else (self.sha256)
        )


def _record_hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def metadata_text(
    name: str, version: str, requires: list[str], requires_python: str | None
) -> bytes:
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    if requires_python:
        lines.append(f"Requires-Python: {requires_python}")
    lines += [f"Requires-Dist: {r}" for r in requires]
    return ("\n".join(lines) + "\n\n").encode()


def build_wheel(
    name: str,
    version: str,
    requires: list[str] | None = None,
    requires_python: str | None = None,
    tag: str = "py3-none-any",
    payload: bytes = b"",
) -> tuple[str, bytes, bytes]:
    """(filename, wheel bytes, METADATA bytes) of a minimal valid wheel."""
    dist = name.replace("-", "_").replace(".", "_")
    info = f"{dist}-{version}.dist-info"
    meta = metadata_text(name, version, requires or [], requires_python)
    module = f"{dist.lower()}.py"
    files = {
        module: f"VERSION = {version!r}\n".encode(),
        f"{info}/METADATA": meta,
        f"{info}/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: withcache-tests\n"
            f"Root-Is-Purelib: {'true' if tag.endswith('-any') else 'false'}\nTag: {tag}\n"
        ).encode(),
    }
    if payload:  # bulk, as a data file (bytes in a .py would fail byte-compiling)
        files[f"{dist.lower()}_payload.bin"] = payload
    record = "".join(f"{p},{_record_hash(b)},{len(b)}\n" for p, b in files.items())
    record += f"{info}/RECORD,,\n"
    files[f"{info}/RECORD"] = record.encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for path, data in files.items():
            z.writestr(zipfile.ZipInfo(path, ZIP_DATE), data)
    return f"{dist}-{version}-{tag}.whl", buf.getvalue(), meta


@dataclass
class Upstream:
    """Projects and files, published on an Origin as /json/simple/ and /html/simple/."""

    dists: list[Dist] = field(default_factory=list)

    def add(
        self,
        name: str,
        version: str,
        requires: list[str] | None = None,
        requires_python: str | None = None,
        tag: str = "py3-none-any",
        payload: bytes = b"",
        **opts: object,
    ) -> Dist:
        filename, body, meta = build_wheel(name, version, requires, requires_python, tag, payload)
        d = Dist(name, version, filename, body, meta, requires_python, **opts)  # type: ignore[arg-type]
        self.dists.append(d)
        return d

    def add_sdist(self, name: str, version: str, requires: list[str] | None = None) -> Dist:
        """A minimal sdist: <name>-<version>/PKG-INFO in a tar.gz."""
        stem = f"{name.replace('-', '_')}-{version}"
        meta = metadata_text(name, version, requires or [], None)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as t:
            info = tarfile.TarInfo(f"{stem}/PKG-INFO")
            info.size, info.mtime = len(meta), 1_704_067_200
            t.addfile(info, io.BytesIO(meta))
        d = Dist(name, version, f"{stem}.tar.gz", buf.getvalue(), meta)
        self.dists.append(d)
        return d

    def projects(self) -> dict[str, list[Dist]]:
        out: dict[str, list[Dist]] = {}
        for d in self.dists:
            out.setdefault(normalize(d.project), []).append(d)
        return out

    def json_page(self, project: str, files_base: str) -> bytes:
        files = []
        for d in self.projects()[project]:
            f: dict[str, object] = {
                "filename": d.filename,
                "url": f"{files_base}/{d.filename}",
                "hashes": {"sha256": d.listed_sha256},
                "requires-python": d.requires_python,
                "yanked": d.yanked,
                "size": len(d.body),
            }
            if d.pep658:
                meta = {"sha256": hashlib.sha256(d.metadata).hexdigest()}
                f["core-metadata"] = meta
                f["dist-info-metadata"] = meta
            files.append(f)
        doc = {"meta": {"api-version": "1.1"}, "name": project, "files": files, "versions": []}
        return json.dumps(doc).encode()

    def html_page(self, project: str, files_base: str) -> bytes:
        links = []
        for d in self.projects()[project]:
            attrs = f' href="{files_base}/{d.filename}#sha256={d.listed_sha256}"'
            if d.requires_python:
                attrs += f' data-requires-python="{html.escape(d.requires_python)}"'
            if d.yanked is not False:
                reason = "" if d.yanked is True else str(d.yanked)
                attrs += f' data-yanked="{html.escape(reason)}"'
            if d.pep658:
                attrs += (
                    f' data-dist-info-metadata="sha256={hashlib.sha256(d.metadata).hexdigest()}"'
                )
            links.append(f"<a{attrs}>{html.escape(d.filename)}</a><br/>")
        return ("<!DOCTYPE html><html><body>" + "\n".join(links) + "</body></html>").encode()

    def publish(self, origin: Origin) -> None:
        """Serve everything at origin.base + /json/simple/, /html/simple/ and /files/."""
        # uv opens dozens of connections at once; socketserver's backlog of 5 drops SYNs,
        # and each drop costs a 1-15 s retransmission: the upstream, not the code, is slow.
        origin.server.socket.listen(128)
        files_base = origin.base + "/files"
        for project in self.projects():
            origin.add(
                f"/json/simple/{project}/",
                self.json_page(project, files_base),
                headers={"Content-Type": JSON_TYPE},
            )
            origin.add(
                f"/html/simple/{project}/",
                self.html_page(project, "../../../files"),
                headers={"Content-Type": "text/html"},
            )
        for d in self.dists:
            origin.add(f"/files/{d.filename}", d.body)
            if d.pep658:
                origin.add(f"/files/{d.filename}.metadata", d.metadata)

    def write_flat(self, root: Path) -> None:
        """The same files as a plain PEP 503 directory tree (for the bench baseline)."""
        for project, dists in self.projects().items():
            d = root / "simple" / project
            d.mkdir(parents=True, exist_ok=True)
            for dist in dists:
                (d / dist.filename).write_bytes(dist.body)


def thirty_projects(prefix: str = "od") -> Upstream:
    """30 projects with dependencies: `<prefix>-app` needs five leaves
    (`<prefix>-dep-1`..`5`); `<prefix>-listed` needs nothing (what a manifest lists);
    23 libraries make a chain (`<prefix>-lib-01` needs `-02`, which needs `-03`, ...).
    Pure wheels, PEP 658 metadata on the app."""
    up = Upstream()
    deps = [f"{prefix}-dep-{i}" for i in range(1, 6)]
    up.add(f"{prefix}-app", "1.0", deps, pep658=True)
    for d in deps:
        up.add(d, "1.0")
    libs = [f"{prefix}-lib-{i:02d}" for i in range(1, 24)]
    up.add(f"{prefix}-listed", "1.0")
    for i, lib in enumerate(libs):
        up.add(lib, "1.0", libs[i + 1 : i + 2])
    assert len(up.projects()) == 30
    return up
