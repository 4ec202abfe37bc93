"""The manifest's `indexes:` section: named private package indexes and who may use them.

Only names and user lists live here (reviewed by pull request); passwords never do
(`withcache users`). Like every section it is checked without network or disk, each
problem at file:line. A name must not shadow a path the cache already serves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import yaml

from withcache.errors import Problem
from withcache.yamlnodes import Ctx, checked_strings, is_null, mapping, named_entries, string
from withcache.yamlnodes import line as line_of

KEYS = {"read", "write", "base"}
BASES = {"mirror"}
# A URL path segment nginx can match literally and a directory name: lower-case,
# digits and inner dashes (no dot, so no "index.html" and no "..").
NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
# Paths the cache serves at the top level (or will: /m/ path mirrors, /metrics), and
# names kept for later front doors. An index there would hide them or be hidden.
RESERVED = frozenset(
    {
        "b",
        "m",
        "simple",
        "metrics",
        "healthz",
        "index.html",
        "catalog.json",
        "report.html",
        "@withcache-metadata",
        "api",
        "bundles",
        "edge",
        "files",
        "packages",
        "pypi",
        "replica",
        "static",
        "upload",
        "uploads",
        "withcache",
    }
)
USER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


@dataclass(frozen=True)
class IndexConfig:
    """One named index as a manifest declares it."""

    name: str
    file: str
    line: int
    read: tuple[str, ...] | None = None  # None: anyone may read
    write: tuple[str, ...] = ()  # empty: nobody uploads over HTTP
    base: str | None = None  # "mirror": the index also lists /simple/'s projects

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def name_problem(name: str) -> str | None:
    """Why `name` cannot be an index name, or None."""
    if name in RESERVED:
        return f"index name {name!r} collides with a path the cache serves (/{name})"
    if not NAME.match(name):
        return (
            f"index name {name!r} must be lower-case letters, digits and inner dashes "
            "(at most 63 characters)"
        )
    return None


def user_problem(user: str) -> str | None:
    if not USER.match(user):
        return (
            f"user name {user!r} must be letters, digits, '.', '_', '@' or '-' "
            "(at most 64, not starting with a symbol)"
        )
    return None


def parse(node: yaml.Node, ctx: Ctx) -> list[IndexConfig]:
    """Validate an `indexes:` section; return what is valid, recording every problem."""
    out: list[IndexConfig] = []
    for name, key_node, value in named_entries(node, ctx, "indexes"):
        before = len(ctx.problems)
        problem = name_problem(name)
        if problem:
            ctx.add(key_node, problem)
        if is_null(value):
            fields: dict[str, yaml.Node] | None = {}
        else:
            fields = mapping(value, ctx, f"index {name}", KEYS)
        if fields is None:
            continue
        read = _users(fields["read"], ctx, f"indexes.{name}.read") if "read" in fields else None
        write = _users(fields["write"], ctx, f"indexes.{name}.write") if "write" in fields else ()
        base = None
        if "base" in fields:
            base = string(fields["base"], ctx, f"indexes.{name}.base")
            if base is not None and base not in BASES:
                ctx.add(fields["base"], f"indexes.{name}.base must be 'mirror', got {base!r}")
        if len(ctx.problems) == before:
            out.append(IndexConfig(name, ctx.file, line_of(key_node), read, write or (), base))
    return out


def _users(node: yaml.Node, ctx: Ctx, what: str) -> tuple[str, ...]:
    if is_null(node):
        return ()
    users = checked_strings(
        node, ctx, what, user_problem, listing="a list of user names", duplicate="duplicate user"
    )
    return tuple(users)


def duplicates(indexes: tuple[IndexConfig, ...]) -> list[Problem]:
    """A name defined twice (in one file or across files) is an error at the second place."""
    seen: dict[str, IndexConfig] = {}
    problems = []
    for ix in indexes:
        first = seen.setdefault(ix.name, ix)
        if first is not ix:
            problems.append(
                Problem(ix.file, ix.line, f"index {ix.name!r} is already defined at {first.where}")
            )
    return problems
