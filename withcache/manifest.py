"""Load and validate manifests, reporting every problem as file:line.

PyYAML's safe_load forgets where a value came from, so we compose the node graph
(which keeps marks) and walk it ourselves. Strings are taken from the raw scalar
text: an unquoted sha256 of only digits must not become an int.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from withcache import keys, storeconfig, urlcheck
from withcache.errors import ManifestError, Problem
from withcache.fmt import human
from withcache.indexes import config as indexes_config
from withcache.indexes.config import IndexConfig
from withcache.mirrors import config as mirrors
from withcache.pyindex.config import PythonConfig
from withcache.pyindex.config import parse as parse_python
from withcache.yamlnodes import LOADER, Ctx, boolean, is_null, mapping, sha256, string

HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
TOP_KEYS = {"defaults", "artifacts", "auto", "python", "store", "indexes", "mirrors"}
DEFAULT_KEYS = {"keep_query", "headers"}
ENTRY_KEYS = {"url", "sha256", "headers", "header_hosts", "keep_query"}
AUTO_KEYS = {"allow_hosts"}


@dataclass(frozen=True)
class Header:
    """One request header; `env:NAME` values are resolved only at sync time."""

    name: str
    value: str
    line: int

    @property
    def env_var(self) -> str | None:
        return self.value[4:] if self.value.startswith("env:") else None


@dataclass(frozen=True)
class Entry:
    """One artifact to keep, with where it was declared."""

    url: str
    key: str
    file: str
    line: int
    sha256: str | None = None
    keep_query: bool = False
    headers: tuple[Header, ...] = ()
    # Other hosts that may receive `headers` when the origin redirects there; by default
    # they go to the URL's own origin (scheme, host, port) only.
    header_hosts: tuple[str, ...] = ()

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Manifest:
    """Everything the manifests ask for, validated. Each top-level section of a file
    becomes one field; load() concatenates the files' sections."""

    entries: tuple[Entry, ...] = ()
    allow_hosts: tuple[str, ...] = ()
    python: tuple[PythonConfig, ...] = ()
    indexes: tuple[IndexConfig, ...] = ()
    files: tuple[str, ...] = ()
    store: tuple[storeconfig.StoreConfig, ...] = ()  # at most one (a second is a problem)
    mirrors: tuple[mirrors.Mirror, ...] = ()

    def by_key(self) -> dict[str, Entry]:
        return {e.key: e for e in self.entries}

    def listed_keys(self) -> set[str]:
        """Every key a manifest lists by name: URL entries and mirror files."""
        return set(self.by_key()) | {f.key for m in self.mirrors for f in m.files}


def manifest_files(paths: Iterable[Path]) -> list[Path]:
    """Expand directories to their *.yaml / *.yml files, in a stable order."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(q for q in p.iterdir() if q.suffix in {".yaml", ".yml"}))
        else:
            out.append(p)
    return out


MAX_BYTES = 8 << 20  # one manifest; 10,000 entries take about 1.5 MB


def manifest_text(path: Path, roots: list[Path], ctx: Ctx) -> str | None:
    """A manifest's text, or None after recording why it was not read.

    A pull request controls these files, and git carries symlinks: only regular files
    are read (a FIFO would hang, /dev/zero never ends), a link in a manifests
    directory must stay inside it, and a file is read only up to MAX_BYTES.
    """

    def refuse(message: str) -> None:
        ctx.problems.append(Problem(str(path), 0, message))

    try:
        if roots and path.is_symlink():
            real = path.resolve()
            if not any(real.is_relative_to(r.resolve()) for r in roots):
                refuse(f"is a symlink to {real}, outside the manifests tree; not read")
                return None
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        refuse(f"cannot read: {exc.strerror or exc}")
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            refuse("not a regular file (a FIFO, device or directory); not read")
            return None
        if st.st_size > MAX_BYTES:
            refuse(
                f"is {human(st.st_size)}, over the {human(MAX_BYTES)} a manifest may be; split it"
            )
            return None
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        refuse(f"cannot read: {exc.strerror or exc}")
        return None
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:
        refuse(f"grew past {human(MAX_BYTES)} while being read; not read")
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        refuse(f"cannot read: not UTF-8 ({exc.reason} at byte {exc.start})")
        return None


def load(paths: Iterable[Path], *, env: Mapping[str, str] | None = None) -> Manifest:
    """Parse and validate every manifest; raise ManifestError listing every problem.

    With `env` given (sync time), `env:` header values must name set variables.
    """
    paths = list(paths)
    files = manifest_files(paths)
    if not files:
        raise ManifestError([Problem(str(p), 0, "no manifest files found") for p in paths])
    problems: list[Problem] = []
    parts: list[Manifest] = []
    roots = [p for p in paths if p.is_dir()]
    for path in files:
        ctx = Ctx(str(path))
        text = manifest_text(path, roots, ctx)
        part = _parse_file(text, ctx) if text is not None else None
        if part is not None:
            parts.append(part)
        problems.extend(ctx.problems)
    merged = _merge(parts, files)
    problems.extend(_cross_file_problems(list(merged.entries)))
    problems.extend(storeconfig.second_sections(merged.store))
    problems.extend(indexes_config.duplicates(merged.indexes))
    problems.extend(mirrors.cross_file_problems(merged.mirrors, _declared(merged.entries)))
    if env is not None:
        problems.extend(_unset_env_problems(merged.entries, env))
    if problems:
        raise ManifestError(problems)
    return merged


def _merge(parts: list[Manifest], files: list[Path]) -> Manifest:
    return Manifest(
        entries=tuple(e for m in parts for e in m.entries),
        allow_hosts=tuple(dict.fromkeys(h for m in parts for h in m.allow_hosts)),
        python=tuple(c for m in parts for c in m.python),
        indexes=tuple(ix for m in parts for ix in m.indexes),
        files=tuple(map(str, files)),
        store=tuple(c for m in parts for c in m.store),
        mirrors=tuple(x for m in parts for x in m.mirrors),
    )


def _parse_file(text: str, ctx: Ctx) -> Manifest | None:
    try:
        root = yaml.compose(text, Loader=LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        ctx.problems.append(Problem(ctx.file, line, f"YAML syntax error: {exc.problem}"))
        return None
    except yaml.YAMLError as exc:
        ctx.problems.append(Problem(ctx.file, 0, f"YAML error: {exc}"))
        return None
    if root is None:
        return Manifest()
    top = mapping(root, ctx, "the manifest", TOP_KEYS)
    if top is None:
        return None
    return Manifest(
        entries=tuple(_artifacts(top.get("artifacts"), _defaults(top.get("defaults"), ctx), ctx)),
        allow_hosts=tuple(_auto(top.get("auto"), ctx)),
        python=tuple(parse_python(top["python"], ctx) if "python" in top else ()),
        store=tuple(storeconfig.parse(top["store"], ctx) if "store" in top else ()),
        indexes=tuple(indexes_config.parse(top["indexes"], ctx) if "indexes" in top else ()),
        mirrors=tuple(mirrors.parse(top["mirrors"], ctx) if "mirrors" in top else ()),
    )


def _defaults(node: yaml.Node | None, ctx: Ctx) -> tuple[bool, tuple[Header, ...]]:
    if node is None:
        return False, ()
    m = mapping(node, ctx, "defaults", DEFAULT_KEYS)
    if m is None:
        return False, ()
    keep = boolean(m["keep_query"], ctx, "keep_query") if "keep_query" in m else False
    headers = _headers(m["headers"], ctx) if "headers" in m else ()
    return bool(keep), headers


def _headers(node: yaml.Node, ctx: Ctx) -> tuple[Header, ...]:
    m = mapping(node, ctx, "headers", None)
    if m is None:
        return ()
    out: list[Header] = []
    for name, v in m.items():
        if not HEADER_NAME.match(name):
            ctx.add(v, f"invalid header name {name!r}")
            continue
        value = string(v, ctx, f"header {name}")
        if value is None:
            continue
        if any(c in value for c in "\r\n\0"):
            ctx.add(v, f"header {name} contains a line break or NUL")
            continue
        out.append(Header(name, value, v.start_mark.line + 1))
    return tuple(out)


def _artifacts(
    node: yaml.Node | None, defaults: tuple[bool, tuple[Header, ...]], ctx: Ctx
) -> list[Entry]:
    if node is None:
        return []
    if is_null(node):
        return []
    if not isinstance(node, yaml.SequenceNode):
        ctx.add(node, "'artifacts' must be a list of URLs or {url: ...} entries")
        return []
    out: list[Entry] = []
    for item in node.value:
        entry = _entry(item, defaults, ctx)
        if entry is not None:
            out.append(entry)
    return out


def _entry(item: yaml.Node, defaults: tuple[bool, tuple[Header, ...]], ctx: Ctx) -> Entry | None:
    keep_query, headers = defaults
    sha: str | None = None
    header_hosts: tuple[str, ...] = ()
    if isinstance(item, yaml.ScalarNode):
        url_node: yaml.Node = item
    else:
        m = mapping(item, ctx, "an artifact entry", ENTRY_KEYS)
        if m is None:
            return None
        if "url" not in m:
            ctx.add(item, "artifact entry has no 'url'")
            return None
        url_node = m["url"]
        if "keep_query" in m:
            kq = boolean(m["keep_query"], ctx, "keep_query")
            keep_query = keep_query if kq is None else kq
        if "sha256" in m:
            sha = sha256(m["sha256"], ctx)
        if "headers" in m:
            own = _headers(m["headers"], ctx)
            merged = {h.name.lower(): h for h in headers}
            merged.update({h.name.lower(): h for h in own})
            headers = tuple(merged.values())
        if "header_hosts" in m:
            header_hosts = tuple(hosts(m["header_hosts"], ctx, "header_hosts"))
    url = string(url_node, ctx, "url")
    if url is None:
        return None
    key = url_key(url, keep_query, url_node, ctx)
    if key is None:
        return None
    line = url_node.start_mark.line + 1
    return Entry(url, key, ctx.file, line, sha, keep_query, headers, header_hosts)


def url_key(url: str, keep_query: bool, node: yaml.Node, ctx: Ctx) -> str | None:
    """The key of a manifest URL, or None after recording why it is unusable."""
    key, problem = urlcheck.key(url, keep_query)
    if key is None:
        ctx.add(node, _with_hint(problem or "invalid url"))
    return key


def url_problem(url: str) -> str | None:
    """Why an artifact URL cannot go into a manifest, in check's words (for `add`)."""
    problem = urlcheck.problem(url)
    return _with_hint(problem) if problem else None


def _with_hint(problem: str) -> str:
    if problem == urlcheck.CREDENTIALS:
        return problem + (
            ". Put them in 'headers:' with an env: value, e.g. Authorization: env:VENDOR_TOKEN"
        )
    return problem


def _auto(node: yaml.Node | None, ctx: Ctx) -> list[str]:
    if node is None:
        return []
    m = mapping(node, ctx, "auto", AUTO_KEYS)
    if m is None or "allow_hosts" not in m:
        return []
    return hosts(m["allow_hosts"], ctx, "auto.allow_hosts")


def hosts(seq: yaml.Node, ctx: Ctx, what: str) -> list[str]:
    """A list of bare host names (or host:port), lower-cased."""
    if not isinstance(seq, yaml.SequenceNode):
        ctx.add(seq, f"{what} must be a list of host names")
        return []
    out = []
    for h in seq.value:
        host = string(h, ctx, f"an entry of {what}")
        if host is not None:
            if "/" in host or " " in host:
                ctx.add(h, f"{what}: a host must be a bare host name, got {host!r}")
            else:
                out.append(host.lower())
    return out


def _cross_file_problems(entries: list[Entry]) -> list[Problem]:
    """Duplicate keys anywhere, and keep_query entries shadowed by a query-less key."""
    problems: list[Problem] = []
    seen: dict[str, Entry] = {}
    for e in entries:
        first = seen.get(e.key)
        if first is None:
            seen[e.key] = e
        elif keys.normalize(first.url, True) == keys.normalize(e.url, True):
            problems.append(
                Problem(e.file, e.line, f"duplicate of {first.url} at {first.where} (same key)")
            )
        else:
            problems.append(
                Problem(
                    e.file,
                    e.line,
                    f"key {e.key} collides with {first.url} at {first.where} once the query "
                    "is dropped (set keep_query: true on both to keep them apart)",
                )
            )
    for e in entries:
        if not e.keep_query or "?" not in e.key:
            continue
        bare = keys.normalize(e.url)
        other = seen.get(bare)
        if other is not None and other is not e:
            problems.append(
                Problem(
                    e.file,
                    e.line,
                    f"collides with {other.url} at {other.where} once the query is dropped: "
                    "shims probe the query-less key first and would serve that file",
                )
            )
    return problems


def _declared(entries: Iterable[Entry]) -> dict[str, tuple[str, str, int]]:
    """key -> (url, file, line) of the URL entries, for the mirrors' duplicate check."""
    return {e.key: (e.url, e.file, e.line) for e in entries}


def _unset_env_problems(entries: Iterable[Entry], env: Mapping[str, str]) -> list[Problem]:
    problems = []
    for e in entries:
        for h in e.headers:
            var = h.env_var
            if var is not None and not env.get(var):
                problems.append(
                    Problem(e.file, h.line, f"header {h.name}: environment variable {var} is unset")
                )
    return problems


def resolve_headers(entry: Entry, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Header values with env: references replaced (secrets never stored elsewhere)."""
    env = os.environ if env is None else env
    return {h.name: (env.get(h.env_var, "") if h.env_var else h.value) for h in entry.headers}
