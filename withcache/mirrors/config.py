"""The `mirrors:` manifest section: parsed and validated, every problem at file:line.

```yaml
mirrors:
  gentoo:                              # served at /m/gentoo/
    sources: [https://distfiles.gentoo.org/, https://mirror.example.edu/gentoo/]
    layout: gentoo                     # bare names live at distfiles/<BLAKE2B-8>/<name>
    files:
      - foo-1.2.tar.gz
      - path: distfiles/d5/bar-2.0.tar.xz
        sha256: ...                    # and/or blake2b, sha512 (Gentoo Manifests), size
    auto: true                         # `watch --auto` fills misses under /m/gentoo/
    fallthrough: true                  # nginx streams a miss from the sources
```

Each file is one artifact keyed by its first source + path, so the shims asking for
that URL and a client asking /m/gentoo/<path> get the same stored bytes. Like the
rest of `check`, this reads no network and no disk.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import yaml

from withcache import keys, urlcheck
from withcache.errors import Problem
from withcache.mirrors import gentoo
from withcache.mirrors.paths import MirrorRef, is_path, name_problem, path_problem
from withcache.yamlnodes import (
    Ctx,
    boolean,
    is_null,
    line,
    mapping,
    named_entries,
    sha256,
    show,
    string,
)

MIRROR_KEYS = {"sources", "layout", "files", "auto", "fallthrough"}
FILE_KEYS = {"path", "sha256", "blake2b", "sha512", "size"}
LAYOUTS = (gentoo.LAYOUT,)
_HEX128 = re.compile(r"^[0-9a-f]{128}$")
_SOURCE_PATH = re.compile(r"^/(?:[A-Za-z0-9._~+@,=:!-]+/)*$")


@dataclass(frozen=True)
class Pins:
    """What a file's bytes must be: any of these given are all checked."""

    sha256: str | None = None
    blake2b: str | None = None
    sha512: str | None = None
    size: int | None = None

    def digests(self) -> tuple[tuple[str, str], ...]:
        """The pins sync checks after the download (sha256 is checked while it runs)."""
        out: list[tuple[str, str]] = []
        if self.blake2b:
            out.append(("blake2b", self.blake2b))
        if self.sha512:
            out.append(("sha512", self.sha512))
        if self.size is not None:
            out.append(("size", str(self.size)))
        return tuple(out)


@dataclass(frozen=True)
class MirrorFile:
    """One file a mirror keeps: where it is served, where it comes from, what it must be."""

    ref: MirrorRef
    key: str  # keys.normalize(first source + path): the artifact's identity
    urls: tuple[str, ...]  # each source + path, in the order they are tried
    file: str
    line: int
    pins: Pins = Pins()

    @property
    def url(self) -> str:
        return self.urls[0]

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Mirror:
    """One `mirrors:` entry."""

    name: str
    sources: tuple[str, ...]  # base URLs, each ending in '/'
    files: tuple[MirrorFile, ...]
    file: str
    line: int
    layout: str | None = None
    auto: bool = False
    fallthrough: bool = False

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def file_at(self, path: str) -> MirrorFile:
        """A file of this mirror at `path` (listed or not): what auto-fill fetches."""
        urls = tuple(s + path for s in self.sources)
        return MirrorFile(
            MirrorRef(self.name, path), keys.normalize(urls[0]), urls, self.file, self.line
        )


def parse(node: yaml.Node, ctx: Ctx) -> list[Mirror]:
    """The section's mirrors; problems go to ctx."""
    out = []
    for name, key_node, value in named_entries(node, ctx, "mirrors"):
        problem = name_problem(name)
        if problem:
            ctx.add(key_node, problem)
            continue
        mirror = _mirror(name, value, ctx, line(key_node))
        if mirror is not None:
            out.append(mirror)
    return out


def _mirror(name: str, node: yaml.Node, ctx: Ctx, at: int) -> Mirror | None:
    what = f"mirror {name!r}"
    m = mapping(node, ctx, what, MIRROR_KEYS)
    if m is None:
        return None
    if "sources" not in m:
        ctx.add(node, f"{what} has no 'sources' (the base URLs it mirrors, tried in order)")
        return None
    sources = _sources(m["sources"], ctx, what)
    layout = None
    if "layout" in m:
        layout = string(m["layout"], ctx, f"{what}: layout")
        if layout is not None and layout not in LAYOUTS:
            ctx.add(m["layout"], f"{what}: unknown layout {layout!r} (known: {', '.join(LAYOUTS)})")
            layout = None
    auto = "auto" in m and bool(boolean(m["auto"], ctx, f"{what}: auto"))
    fall = (
        bool(boolean(m["fallthrough"], ctx, f"{what}: fallthrough"))
        if "fallthrough" in m
        else False
    )
    if not sources:
        return None
    files = _files(m.get("files"), name, sources, layout, ctx)
    return Mirror(name, tuple(sources), tuple(files), ctx.file, at, layout, auto, fall)


def _sources(node: yaml.Node, ctx: Ctx, what: str) -> list[str]:
    if not isinstance(node, yaml.SequenceNode) or not node.value:
        ctx.add(node, f"{what}: 'sources' must be a non-empty list of base URLs")
        return []
    out: list[str] = []
    seen: dict[str, int] = {}
    ok = True
    for item in node.value:
        url = string(item, ctx, f"{what}: a source")
        if url is None:
            ok = False
            continue
        base = source_base(url)
        problem = source_problem(url)
        if problem:
            ctx.add(item, f"{what}: source {url!r}: {problem}")
            ok = False
        elif base in seen:
            ctx.add(item, f"{what}: source {url} is listed twice (first at line {seen[base]})")
            ok = False
        else:
            seen[base] = line(item)
            out.append(base)
    return out if ok else []


def source_base(url: str) -> str:
    """A source URL with the trailing '/' a base needs."""
    return url if url.endswith("/") else url + "/"


def source_problem(url: str) -> str | None:
    """Why a URL cannot be a mirror source, or None."""
    parsed, problem = urlcheck.check(url)
    if parsed is None:
        return problem or "invalid url"
    if parsed.query is not None or parsed.fragment is not None:
        return "a base URL has no query or fragment"
    path = parsed.path or "/"
    if not _SOURCE_PATH.match(source_base(path)):
        return "its path may hold only letters, digits and . _ ~ + @ , = : ! - between '/'"
    if not re.match(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])$", parsed.host):
        return f"host {parsed.host!r} is not a plain DNS name or IP address"
    return None


def _files(
    node: yaml.Node | None, mirror: str, sources: list[str], layout: str | None, ctx: Ctx
) -> list[MirrorFile]:
    if node is None or is_null(node):
        return []
    if not isinstance(node, yaml.SequenceNode):
        ctx.add(node, f"mirror {mirror!r}: 'files' must be a list of paths or {{path: ...}}")
        return []
    out: list[MirrorFile] = []
    seen: dict[str, int] = {}
    for item in node.value:
        f = _file(item, mirror, sources, layout, ctx)
        if f is None:
            continue
        first = seen.get(f.ref.path)
        if first is not None:
            ctx.add(
                item, f"mirror {mirror!r}: {f.ref.path} is listed twice (first at line {first})"
            )
            continue
        seen[f.ref.path] = f.line
        out.append(f)
    return out


def _file(
    item: yaml.Node, mirror: str, sources: list[str], layout: str | None, ctx: Ctx
) -> MirrorFile | None:
    what = f"mirror {mirror!r}"
    pins = Pins()
    if isinstance(item, yaml.ScalarNode):
        path_node: yaml.Node = item
    else:
        m = mapping(item, ctx, f"{what}: a file", FILE_KEYS)
        if m is None:
            return None
        if "path" not in m:
            ctx.add(item, f"{what}: a file entry has no 'path'")
            return None
        path_node = m["path"]
        pins = _pins(m, ctx, what)
    text = string(path_node, ctx, f"{what}: path")
    if text is None:
        return None
    path = file_path(text, layout)
    problem = path_problem(path)
    if problem is None and layout == gentoo.LAYOUT:
        problem = _gentoo_problem(path)
    if problem:
        ctx.add(path_node, f"{what}: {problem}")
        return None
    urls = tuple(s + path for s in sources)
    return MirrorFile(
        MirrorRef(mirror, path), keys.normalize(urls[0]), urls, ctx.file, line(path_node), pins
    )


def file_path(text: str, layout: str | None) -> str:
    """The path a `files:` item means: with `layout: gentoo` a bare name (no '/') is a
    distfile, which lives at distfiles/<BLAKE2B-8>/<name>."""
    if layout == gentoo.LAYOUT and "/" not in text and is_path(text):
        return gentoo.distfile_path(text)
    return text


def _gentoo_problem(path: str) -> str | None:
    if path == gentoo.LAYOUT_CONF_PATH:
        return f"{path} is written by withcache for `layout: gentoo`; it cannot be a file"
    right = gentoo.misplaced(path)
    if right:
        return f"{path} is not where GLEP 75 puts it: {right} (or list the bare name)"
    return None


def _pins(m: Mapping[str, yaml.Node], ctx: Ctx, what: str) -> Pins:
    sha = sha256(m["sha256"], ctx) if "sha256" in m else None
    digests = {}
    for algo in ("blake2b", "sha512"):
        if algo in m:
            node = m[algo]
            value = str(node.value).lower() if isinstance(node, yaml.ScalarNode) else ""
            value = value.removeprefix(f"{algo}:")
            if _HEX128.match(value):
                digests[algo] = value
            else:
                ctx.add(node, f"{what}: {algo} must be 128 hex digits, got {show(node)}")
    size = None
    if "size" in m:
        node = m["size"]
        raw = str(node.value) if isinstance(node, yaml.ScalarNode) else ""
        if raw.isascii() and raw.isdigit():
            size = int(raw)
        else:
            ctx.add(node, f"{what}: size must be a whole number of bytes, got {show(node)}")
    return Pins(sha, digests.get("blake2b"), digests.get("sha512"), size)


def cross_file_problems(
    mirrors: Iterable[Mirror], entries: Mapping[str, tuple[str, str, int]]
) -> list[Problem]:
    """A mirror name defined twice, and a key declared twice (by two mirrors, or by a
    mirror and an `artifacts:` entry). `entries`: key -> (url, file, line)."""
    problems: list[Problem] = []
    names: dict[str, Mirror] = {}
    seen = dict(entries)
    for mirror in mirrors:
        first = names.get(mirror.name)
        if first is not None:
            problems.append(
                Problem(
                    mirror.file,
                    mirror.line,
                    f"mirror {mirror.name!r} is already defined at {first.where}",
                )
            )
            continue
        names[mirror.name] = mirror
        for f in mirror.files:
            other = seen.get(f.key)
            if other is not None:
                url, file, ln = other
                problems.append(
                    Problem(
                        f.file,
                        f.line,
                        f"{f.url} is already listed at {file}:{ln} (same key as {url}); "
                        "list it once (a mirror file is served at /b/ too)",
                    )
                )
                continue
            seen[f.key] = (f.url, f.file, f.line)
    return problems


def files(mirrors: Iterable[Mirror]) -> list[MirrorFile]:
    return [f for m in mirrors for f in m.files]
