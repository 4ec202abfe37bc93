"""The manifest's `python:` section: which packages the Python index serves.

Validated like the rest of the manifest (every problem as file:line, nothing on
the network, nothing on disk: `withcache check` runs as a pull-request gate on
machines that have no wheelhouse). Wheelhouse directories are checked at sync time.
`on_demand` (which missed projects the watcher may take from the upstream) and
`refresh` (how often it revalidates them) are read here too.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from withcache import urlcheck
from withcache.fmt import parse_duration
from withcache.pyindex import names
from withcache.pyindex.targets import platform_problem
from withcache.yamlnodes import Ctx, boolean, checked_strings, mapping, show, string
from withcache.yamlnodes import line as line_of

PYPI = "https://pypi.org/simple/"
KEYS = {
    "index",
    "requirements",
    "python",
    "platforms",
    "sdists",
    "wheelhouse",
    "on_demand",
    "refresh",
}
PYTHON_VERSION = re.compile(r"^3\.[0-9]{1,2}$")


@dataclass(frozen=True)
class Requested:
    """One requirement line as written, with where it was written."""

    text: str
    line: int


@dataclass(frozen=True)
class PythonConfig:
    """One manifest file's `python:` section, validated."""

    file: str
    line: int
    index: str = PYPI
    requirements: tuple[Requested, ...] = ()
    python: tuple[str, ...] = ()
    platforms: tuple[str, ...] = ()
    sdists: bool = False
    wheelhouse: tuple[Path, ...] = ()
    requirements_line: int = 0
    on_demand: tuple[str, ...] = ()  # normalised name globs; () is off, ("*",) is `all`
    refresh: float | None = None  # seconds between the watcher's revalidations

    def takes(self, project: str) -> bool:
        """May a missed (normalised) project be taken from the upstream on demand?"""
        return bool(self.on_demand) and names.admitted(project, self.on_demand)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def requirements_where(self) -> str:
        """Where a resolution failure points: the requirements list."""
        return f"{self.file}:{self.requirements_line or self.line}"


def parse(node: yaml.Node, ctx: Ctx) -> list[PythonConfig]:
    """Validate a `python:` section; return [PythonConfig] or [] after recording problems."""
    file = ctx.file
    problems = ctx.problems
    before = len(problems)
    m = mapping(node, ctx, "python", KEYS)
    if m is None:
        return []
    line = line_of(node)
    index = _index(m["index"], ctx) if "index" in m else PYPI
    reqs = _requirements(m["requirements"], ctx) if "requirements" in m else ()
    pythons = _list(m.get("python"), ctx, "python", _python_version)
    platforms = _list(m.get("platforms"), ctx, "platforms", _platform)
    sdists = bool(boolean(m["sdists"], ctx, "sdists")) if "sdists" in m else False
    base = Path(file).parent
    wheelhouse = tuple(base / p for p in _list(m.get("wheelhouse"), ctx, "wheelhouse", _directory))
    on_demand = _on_demand(m["on_demand"], ctx) if "on_demand" in m else ()
    refresh = _refresh(m["refresh"], ctx) if "refresh" in m else None
    if not ({"requirements", "wheelhouse", "on_demand"} & m.keys()):
        ctx.add(node, "python: needs 'requirements', 'on_demand' or 'wheelhouse'")
    if reqs or "on_demand" in m:
        for key in ("python", "platforms"):
            if key not in m:
                ctx.add(node, f"python: needs '{key}' to resolve for")
            elif isinstance(m[key], yaml.SequenceNode) and not m[key].value:
                ctx.add(m[key], f"python.{key} must not be empty")
    if len(problems) > before:
        return []
    return [
        PythonConfig(
            file=file,
            line=line,
            index=index or PYPI,
            requirements=reqs,
            python=tuple(pythons),
            platforms=tuple(platforms),
            sdists=sdists,
            wheelhouse=wheelhouse,
            requirements_line=line_of(m["requirements"]) if reqs else 0,
            on_demand=on_demand,
            refresh=refresh,
        )
    ]


def _index(node: yaml.Node, ctx: Ctx) -> str | None:
    url = string(node, ctx, "python.index")
    if url is None:
        return None
    problem = urlcheck.problem(url)
    if problem:
        ctx.add(node, f"python.index: {problem}")
        return None
    if "?" in url or "#" in url:
        ctx.add(node, "python.index must not have a query or a fragment")
        return None
    return url if url.endswith("/") else url + "/"


def _on_demand(node: yaml.Node, ctx: Ctx) -> tuple[str, ...]:
    """`all`, or a list of project name globs (normalised like the names they match)."""
    if isinstance(node, yaml.ScalarNode) and node.value == names.ALL:
        return ("*",)
    if not isinstance(node, yaml.SequenceNode):
        ctx.add(node, f"python.on_demand must be 'all' or a list of name globs, got {show(node)}")
        return ()
    if not node.value:
        ctx.add(node, "python.on_demand must not be empty (leave it out to turn it off)")
        return ()
    out: list[str] = []
    for item in node.value:
        glob = string(item, ctx, "an entry of python.on_demand")
        if glob is None:
            continue
        problem = names.glob_problem(glob)
        if problem:
            ctx.add(item, f"python.on_demand: {problem}")
        elif names.normalize_glob(glob) in out:
            ctx.add(item, f"python.on_demand: duplicate {glob!r}")
        else:
            out.append(names.normalize_glob(glob))
    return tuple(out)


def _refresh(node: yaml.Node, ctx: Ctx) -> float | None:
    text = string(node, ctx, "python.refresh")
    if text is None:
        return None
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        ctx.add(node, f"python.refresh: {exc}")
        return None
    if seconds < 1:
        ctx.add(node, "python.refresh must be at least 1s")
        return None
    return seconds


def _requirements(node: yaml.Node, ctx: Ctx) -> tuple[Requested, ...]:
    if not isinstance(node, yaml.SequenceNode):
        ctx.add(node, "python.requirements must be a list of requirement strings")
        return ()
    # packaging costs a tenth of a second to import: only manifests with requirements pay
    from packaging.requirements import InvalidRequirement, Requirement

    out: list[Requested] = []
    seen: set[str] = set()
    for item in node.value:
        text = string(item, ctx, "a requirement")
        if text is None:
            continue
        line = line_of(item)
        try:
            req = Requirement(text)
        except InvalidRequirement as exc:
            ctx.add(item, f"invalid requirement {text!r}: {exc}")
            continue
        if req.url:
            ctx.add(
                item,
                f"{text!r}: direct URL requirements cannot be indexed; "
                "list the URL under 'artifacts:' or put the file in a wheelhouse",
            )
            continue
        if str(req) in seen:
            ctx.add(item, f"duplicate requirement {text!r}")
            continue
        seen.add(str(req))
        out.append(Requested(text, line))
    return tuple(out)


def _list(
    node: yaml.Node | None, ctx: Ctx, what: str, check: Callable[[str], str | None]
) -> list[str]:
    """A list of strings, each checked; duplicates flagged."""
    if node is None:
        return []
    return checked_strings(node, ctx, f"python.{what}", check)


def _python_version(value: str) -> str | None:
    if PYTHON_VERSION.match(value):
        return None
    return f'{value!r} is not a Python version like "3.12"'


def _platform(value: str) -> str | None:
    return platform_problem(value)


def _directory(value: str) -> str | None:
    if "\0" in value:
        return "a path cannot contain NUL"
    return None
