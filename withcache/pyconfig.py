"""The manifest's `python:` section (the package index front door)."""

from __future__ import annotations

import yaml

from withcache.errors import Problem


def parse(node: yaml.Node, file: str, problems: list[Problem]) -> list[object]:
    """Validate a `python:` section; the package-index work fills this in."""
    line = node.start_mark.line + 1
    problems.append(Problem(file, line, "the python: section is not supported yet"))
    return []
