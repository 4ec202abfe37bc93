"""Reading YAML node graphs with their marks: the helpers every manifest section uses.

PyYAML's safe_load forgets where a value came from, so manifests are composed into
nodes (which keep line numbers) and walked with these. Strings are taken from the raw
scalar text: an unquoted sha256 of only digits must not become an int.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import yaml

from withcache.errors import Problem

# libyaml's loader is ~10x faster and keeps marks too; fall back where it is absent
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
BOOL_TAG = "tag:yaml.org,2002:bool"
SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class Ctx:
    """The file being read and the problems found in it so far."""

    file: str
    problems: list[Problem] = field(default_factory=list)

    def add(self, node: yaml.Node, message: str) -> None:
        self.problems.append(Problem(self.file, line(node), message))


def line(node: yaml.Node) -> int:
    """The 1-based line a node starts on."""
    return int(node.start_mark.line) + 1


def mapping(
    node: yaml.Node, ctx: Ctx, what: str, allowed: set[str] | None
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


def named_entries(node: yaml.Node, ctx: Ctx, what: str) -> list[tuple[str, yaml.Node, yaml.Node]]:
    """A section that maps names to entries (`indexes:`, `mirrors:`), nothing when null:
    (name, its key node, its value) for each, the key node giving the entry's line."""
    if is_null(node):
        return []
    top = mapping(node, ctx, what, None)
    if top is None:
        return []
    key_nodes = {k.value: k for k, _ in node.value if isinstance(k, yaml.ScalarNode)}
    return [(name, key_nodes.get(name, value), value) for name, value in top.items()]


def boolean(node: yaml.Node, ctx: Ctx, what: str) -> bool | None:
    if isinstance(node, yaml.ScalarNode) and node.tag == BOOL_TAG:
        return str(node.value).lower() in {"true", "yes", "on"}
    ctx.add(node, f"{what} must be true or false, got {show(node)}")
    return None


def string(node: yaml.Node, ctx: Ctx, what: str) -> str | None:
    if isinstance(node, yaml.ScalarNode) and node.value != "":
        return str(node.value)
    ctx.add(node, f"{what} must be a non-empty string, got {show(node)}")
    return None


def sha256(node: yaml.Node, ctx: Ctx) -> str | None:
    """A sha256 pin: 64 hex digits, optionally prefixed 'sha256:', any case."""
    value = node.value if isinstance(node, yaml.ScalarNode) else None
    if isinstance(value, str):
        candidate = value.lower().removeprefix("sha256:")
        if SHA256.match(candidate):
            return candidate
    ctx.add(node, f"sha256 must be 64 hex digits, got {show(node)}")
    return None


def checked_strings(
    node: yaml.Node,
    ctx: Ctx,
    what: str,
    check: Callable[[str], str | None],
    *,
    listing: str = "a list",
    duplicate: str = "duplicate",
) -> list[str]:
    """A list of non-empty strings, each kept once: `check` names a value's problem (or
    None); every bad or repeated item is recorded, in the words `listing` and
    `duplicate` give ("a list of user names", "duplicate user")."""
    if not isinstance(node, yaml.SequenceNode):
        ctx.add(node, f"{what} must be {listing}, got {show(node)}")
        return []
    out: list[str] = []
    for item in node.value:
        value = string(item, ctx, f"an entry of {what}")
        if value is None:
            continue
        problem = check(value)
        if problem:
            ctx.add(item, f"{what}: {problem}")
        elif value in out:
            ctx.add(item, f"{what}: {duplicate} {value!r}")
        else:
            out.append(value)
    return out


def is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.value in {"", "null", "~"}


def show(node: yaml.Node) -> str:
    if isinstance(node, yaml.ScalarNode):
        return repr(node.value)
    return "a list" if isinstance(node, yaml.SequenceNode) else "a mapping"
