"""Python project names and the `on_demand` globs that admit them: pure.

Everything here runs before any upstream request. A name comes from whoever sent
a request to /simple/<name>/, so it is refused unless it is a plain PEP 508 name
of sane length (no `..`, no `%2f`, no slash, no control character); an accepted
name is PEP 503 normalised, and only then matched against the globs.
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase

MAX_NAME = 128  # longer than any real project name; longer ones are scanners or typos
ALL = "all"

_PEP508 = re.compile(r"^([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9])$")
_RUN = re.compile(r"[-_.]+")
_GLOB = re.compile(r"^[A-Za-z0-9._*?-]+$")


def normalize(name: str) -> str:
    """PEP 503: runs of -, _ and . become one -, all lower case."""
    return _RUN.sub("-", name).lower()


def name_problem(name: str) -> str | None:
    """Why `name` cannot be a project name, or None."""
    if len(name) > MAX_NAME:
        return f"longer than {MAX_NAME} characters"
    if not _PEP508.match(name):
        return "not a project name (letters, digits, '.', '_' and '-' only)"
    return None


def project(name: str) -> str | None:
    """The normalised project a requested name means, or None if it is refused."""
    return None if name_problem(name) else normalize(name)


def glob_problem(glob: str) -> str | None:
    """Why an `on_demand` entry cannot be a name glob, or None."""
    if len(glob) > MAX_NAME:
        return f"longer than {MAX_NAME} characters"
    if not _GLOB.match(glob):
        return f"{glob!r} is not a project name glob (letters, digits, '.', '_', '-', '*', '?')"
    return None


def normalize_glob(glob: str) -> str:
    """Globs are matched against normalised names, so they are normalised the same way
    (`Foo_*` matches `foo-bar`)."""
    return normalize(glob)


def admitted(project_name: str, globs: tuple[str, ...]) -> bool:
    """Does a normalised project name fall under one of the (normalised) globs?"""
    return any(fnmatchcase(project_name, g) for g in globs)
