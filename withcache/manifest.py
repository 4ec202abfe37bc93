"""Load and validate manifests, reporting every problem as file:line.

PyYAML's safe_load forgets where a value came from, so we compose the node graph
(which keeps marks) and walk it ourselves. Strings are taken from the raw scalar
text: an unquoted sha256 of only digits must not become an int.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from withcache import keys
from withcache.errors import ManifestError, Problem

SHA256 = re.compile(r"^[0-9a-f]{64}$")
WHITESPACE = re.compile(r"\s")
# libyaml's loader is ~10x faster and keeps marks too; fall back where it is absent
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
TOP_KEYS = {"defaults", "artifacts", "auto", "python"}
DEFAULT_KEYS = {"keep_query", "headers"}
ENTRY_KEYS = {"url", "sha256", "headers", "keep_query"}
AUTO_KEYS = {"allow_hosts"}
BOOL_TAG = "tag:yaml.org,2002:bool"
STR_TAG = "tag:yaml.org,2002:str"


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

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Manifest:
    """Everything the manifests ask for, validated."""

    entries: tuple[Entry, ...] = ()
    allow_hosts: tuple[str, ...] = ()
    python: tuple[object, ...] = ()
    files: tuple[str, ...] = ()

    def by_key(self) -> dict[str, Entry]:
        return {e.key: e for e in self.entries}


@dataclass
class _Ctx:
    file: str
    problems: list[Problem] = field(default_factory=list)

    def add(self, node: yaml.Node, message: str) -> None:
        self.problems.append(Problem(self.file, node.start_mark.line + 1, message))


def manifest_files(paths: Iterable[Path]) -> list[Path]:
    """Expand directories to their *.yaml / *.yml files, in a stable order."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(q for q in p.iterdir() if q.suffix in {".yaml", ".yml"}))
        else:
            out.append(p)
    return out


def load(paths: Iterable[Path], *, env: Mapping[str, str] | None = None) -> Manifest:
    """Parse and validate every manifest; raise ManifestError listing every problem.

    With `env` given (sync time), `env:` header values must name set variables.
    """
    files = manifest_files(paths)
    problems: list[Problem] = []
    entries: list[Entry] = []
    hosts: list[str] = []
    python: list[object] = []
    if not files:
        raise ManifestError([Problem(str(p), 0, "no manifest files found") for p in paths])
    for path in files:
        ctx = _Ctx(str(path))
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(str(path), 0, f"cannot read: {exc}"))
            continue
        parsed = _parse_file(text, ctx)
        if parsed is not None:
            entries.extend(parsed[0])
            hosts.extend(parsed[1])
            python.extend(parsed[2])
        problems.extend(ctx.problems)
    problems.extend(_cross_file_problems(entries))
    if env is not None:
        problems.extend(_unset_env_problems(entries, env))
    if problems:
        raise ManifestError(problems)
    unique_hosts = tuple(dict.fromkeys(hosts))
    return Manifest(tuple(entries), unique_hosts, tuple(python), tuple(map(str, files)))


def _parse_file(text: str, ctx: _Ctx) -> tuple[list[Entry], list[str], list[object]] | None:
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
        return [], [], []
    top = _mapping(root, ctx, "the manifest", TOP_KEYS)
    if top is None:
        return None
    defaults = _defaults(top.get("defaults"), ctx)
    entries = _artifacts(top.get("artifacts"), defaults, ctx)
    hosts = _auto(top.get("auto"), ctx)
    python: list[object] = []
    if "python" in top:
        from withcache import pyconfig

        python = pyconfig.parse(top["python"], ctx.file, ctx.problems)
    return entries, hosts, python


def _mapping(
    node: yaml.Node, ctx: _Ctx, what: str, allowed: set[str] | None
) -> dict[str, yaml.Node] | None:
    """A mapping node as {key: value node}; flags duplicate keys, and unknown ones
    unless `allowed` is None."""
    if not isinstance(node, yaml.MappingNode):
        ctx.add(node, f"{what} must be a mapping")
        return None
    out: dict[str, yaml.Node] = {}
    for k, v in node.value:
        name = k.value if isinstance(k, yaml.ScalarNode) else "?"
        if name in out:
            ctx.add(k, f"duplicate key '{name}' in {what}")
        elif allowed is not None and name not in allowed:
            ctx.add(k, f"unknown key '{name}' in {what} (allowed: {', '.join(sorted(allowed))})")
        else:
            out[name] = v
    return out


def _bool(node: yaml.Node, ctx: _Ctx, what: str) -> bool | None:
    if isinstance(node, yaml.ScalarNode) and node.tag == BOOL_TAG:
        return node.value.lower() in {"true", "yes", "on"}
    ctx.add(node, f"{what} must be true or false, got {_show(node)}")
    return None


def _string(node: yaml.Node, ctx: _Ctx, what: str) -> str | None:
    if isinstance(node, yaml.ScalarNode) and node.value != "":
        return str(node.value)
    ctx.add(node, f"{what} must be a non-empty string, got {_show(node)}")
    return None


def _show(node: yaml.Node) -> str:
    if isinstance(node, yaml.ScalarNode):
        return repr(node.value)
    return "a list" if isinstance(node, yaml.SequenceNode) else "a mapping"


def _defaults(node: yaml.Node | None, ctx: _Ctx) -> tuple[bool, tuple[Header, ...]]:
    if node is None:
        return False, ()
    m = _mapping(node, ctx, "defaults", DEFAULT_KEYS)
    if m is None:
        return False, ()
    keep = _bool(m["keep_query"], ctx, "keep_query") if "keep_query" in m else False
    headers = _headers(m["headers"], ctx) if "headers" in m else ()
    return bool(keep), headers


def _headers(node: yaml.Node, ctx: _Ctx) -> tuple[Header, ...]:
    m = _mapping(node, ctx, "headers", None)
    if m is None:
        return ()
    out: list[Header] = []
    for name, v in m.items():
        if not HEADER_NAME.match(name):
            ctx.add(v, f"invalid header name {name!r}")
            continue
        value = _string(v, ctx, f"header {name}")
        if value is None:
            continue
        if any(c in value for c in "\r\n\0"):
            ctx.add(v, f"header {name} contains a line break or NUL")
            continue
        out.append(Header(name, value, v.start_mark.line + 1))
    return tuple(out)


def _artifacts(
    node: yaml.Node | None, defaults: tuple[bool, tuple[Header, ...]], ctx: _Ctx
) -> list[Entry]:
    if node is None:
        return []
    if isinstance(node, yaml.ScalarNode) and node.value in {"", "null", "~"}:
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


def _entry(item: yaml.Node, defaults: tuple[bool, tuple[Header, ...]], ctx: _Ctx) -> Entry | None:
    keep_query, headers = defaults
    sha: str | None = None
    if isinstance(item, yaml.ScalarNode):
        url_node: yaml.Node = item
    else:
        m = _mapping(item, ctx, "an artifact entry", ENTRY_KEYS)
        if m is None:
            return None
        if "url" not in m:
            ctx.add(item, "artifact entry has no 'url'")
            return None
        url_node = m["url"]
        if "keep_query" in m:
            kq = _bool(m["keep_query"], ctx, "keep_query")
            keep_query = keep_query if kq is None else kq
        if "sha256" in m:
            sha = _sha256(m["sha256"], ctx)
        if "headers" in m:
            own = _headers(m["headers"], ctx)
            merged = {h.name.lower(): h for h in headers}
            merged.update({h.name.lower(): h for h in own})
            headers = tuple(merged.values())
    url = _string(url_node, ctx, "url")
    if url is None:
        return None
    key = url_key(url, keep_query, url_node, ctx)
    if key is None:
        return None
    return Entry(url, key, ctx.file, url_node.start_mark.line + 1, sha, keep_query, headers)


def url_key(url: str, keep_query: bool, node: yaml.Node, ctx: _Ctx) -> str | None:
    """The key of a manifest URL, or None after recording why it is unusable."""
    parsed, problem = _check_url(url)
    if parsed is None:
        ctx.add(node, problem or "invalid url")
        return None
    return keys.normalize_parsed(parsed, keep_query)


def url_problem(url: str) -> str | None:
    """Why a URL cannot go into a manifest (shared with `withcache add`), or None."""
    return _check_url(url)[1]


def _check_url(url: str) -> tuple[keys.ParsedURL | None, str | None]:
    if WHITESPACE.search(url):
        return None, f"url contains whitespace: {url!r}"
    try:
        parsed = keys.parse(url)
        keys.normalize_parsed(parsed)
    except keys.NotCacheable as exc:
        return None, f"'url' must be an http(s) URL with a host: {exc}"
    if parsed.userinfo is not None:
        return None, (
            "url contains credentials; they would end up in keys and logs. "
            "Put them in 'headers:' with an env: value, e.g. "
            "Authorization: env:VENDOR_TOKEN"
        )
    return parsed, None


def _sha256(node: yaml.Node, ctx: _Ctx) -> str | None:
    value = node.value if isinstance(node, yaml.ScalarNode) else None
    if isinstance(value, str):
        candidate = value.lower().removeprefix("sha256:")
        if SHA256.match(candidate):
            return candidate
    ctx.add(node, f"sha256 must be 64 hex digits, got {_show(node)}")
    return None


def _auto(node: yaml.Node | None, ctx: _Ctx) -> list[str]:
    if node is None:
        return []
    m = _mapping(node, ctx, "auto", AUTO_KEYS)
    if m is None or "allow_hosts" not in m:
        return []
    seq = m["allow_hosts"]
    if not isinstance(seq, yaml.SequenceNode):
        ctx.add(seq, "auto.allow_hosts must be a list of host names")
        return []
    hosts = []
    for h in seq.value:
        host = _string(h, ctx, "an allowed host")
        if host is not None:
            if "/" in host or " " in host:
                ctx.add(h, f"allowed host must be a bare host name, got {host!r}")
            else:
                hosts.append(host.lower())
    return hosts


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


def _unset_env_problems(entries: list[Entry], env: Mapping[str, str]) -> list[Problem]:
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
