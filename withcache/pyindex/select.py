"""Choose the files the index lists: pure, so every rule here is a table test.

For each target and each project the resolver pinned, the one wheel that target's
installer would prefer (pip and uv rank PEP 425 tags the same way), plus the
version's sdists when the manifest asks for them. One file per target keeps the
mirror small (torch publishes a 900 MB wheel per interpreter and platform) while
every listed target still installs. A project found in a wheelhouse is taken from
there only: a private name never picks up a same-named public upload.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from packaging.tags import Tag
from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from withcache import keys
from withcache.pyindex.model import IndexFile, Listed
from withcache.pyindex.resolve import Pin
from withcache.pyindex.targets import Target
from withcache.pyindex.wheelhouse import name_version


def _same_version(a: str, b: str) -> bool:
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


def wheel_tags(filename: str) -> frozenset[Tag] | None:
    try:
        return frozenset(parse_wheel_filename(filename)[3])
    except InvalidWheelFilename:
        return None


def best_wheel(files: Iterable[Listed], target: Target) -> Listed | None:
    """The wheel the target's installer would pick; a yanked file only if nothing else fits."""
    best: tuple[bool, int, Listed] | None = None
    for f in files:
        tags = wheel_tags(f.filename) if f.filename.endswith(".whl") else None
        if tags is None:
            continue
        rank = target.rank(tags)
        if rank is None:
            continue
        candidate = (f.yanked is not False, rank, f)
        if best is None or candidate[:2] < best[:2]:
            best = candidate
    return None if best is None else best[2]


def sdists_of(files: Iterable[Listed]) -> list[Listed]:
    return [f for f in files if f.filename.endswith((".tar.gz", ".zip"))]


def of_version(files: Iterable[Listed], project: str, version: str) -> list[Listed]:
    out = []
    for f in files:
        nv = name_version(f.filename)
        if nv is not None and nv[0] == project and _same_version(nv[1], version):
            out.append(f)
    return out


def to_index_file(project: str, f: Listed) -> IndexFile:
    key = keys.normalize(f.url, keep_query="?" in f.url)
    meta_key = None
    if f.metadata is not False:
        meta_key = keys.normalize(f.url + ".metadata", keep_query="?" in f.url)
    return IndexFile(
        project=project,
        filename=f.filename,
        key=key,
        url=f.url,
        sha256=f.sha256,
        requires_python=f.requires_python,
        yanked=f.yanked,
        metadata_key=meta_key,
        metadata_sha256=f.metadata if isinstance(f.metadata, str) else None,
        upload_time=f.upload_time,
    )


def select(
    pins: Mapping[Target, Sequence[Pin]],
    pages: Mapping[str, Sequence[Listed]],
    local: Iterable[IndexFile],
    sdists: bool,
) -> tuple[list[IndexFile], list[str]]:
    """The index's files, and a problem line for every pin nothing could serve."""
    chosen: dict[str, IndexFile] = {}
    problems: list[str] = []
    local_files = list(local)
    local_projects = {f.project for f in local_files}
    for lf in local_files:
        chosen.setdefault(lf.key, lf)
    for target, target_pins in pins.items():
        for pin in target_pins:
            if pin.project in local_projects:
                continue
            files = of_version(pages.get(pin.project, ()), pin.project, pin.version)
            picked = [w] if (w := best_wheel(files, target)) else []
            if sdists:
                picked += sdists_of(files)
            if not picked:
                problems.append(
                    f"{target}: {pin.project}=={pin.version} was resolved, but the upstream "
                    "lists no file of it that fits"
                )
            for f in picked:
                try:
                    index_file = to_index_file(pin.project, f)
                except keys.NotCacheable as exc:
                    problems.append(f"{pin.project}: {f.filename}: {exc}")
                    continue
                chosen.setdefault(index_file.key, index_file)
    return sorted(chosen.values(), key=lambda f: (f.project, f.filename)), problems
