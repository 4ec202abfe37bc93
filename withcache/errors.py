"""Errors the CLI turns into one-line messages and exit codes; anything else is a bug."""

from __future__ import annotations

import re
from dataclasses import dataclass, field


class WithcacheError(Exception):
    """Base of every error a user can act on."""

    exit_code = 1


@dataclass
class Problem:
    """One thing wrong with a manifest, located at file:line."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        """file:line: message; a problem with the file as a whole (line 0) is file: message."""
        if self.line == 0:
            return f"{self.file}: {self.message}"
        return f"{self.file}:{self.line}: {self.message}"


@dataclass
class ManifestError(WithcacheError):
    """Every problem found in the manifests, not just the first; at most SHOW_PER_KIND
    lines of one kind of problem (a file of 5,000 duplicates says so in a few lines)."""

    problems: list[Problem] = field(default_factory=list)
    exit_code = 2
    SHOW_PER_KIND = 20

    def __str__(self) -> str:
        shown: dict[str, int] = {}
        lines = []
        for p in self.problems:
            kind = _KIND.sub("_", p.message)
            shown[kind] = shown.get(kind, 0) + 1
            if shown[kind] <= self.SHOW_PER_KIND:
                lines.append(str(p))
        for kind, n in shown.items():
            if n > self.SHOW_PER_KIND:
                example = next(p for p in self.problems if _KIND.sub("_", p.message) == kind)
                lines.append(f"... and {n - self.SHOW_PER_KIND:,} more like: {example.message}")
        return "\n".join(lines)


# What varies between problems of one kind: quoted text, URLs, paths, numbers.
_KIND = re.compile(r"'[^']*'|\"[^\"]*\"|\S+://\S*|\S*[/:]\S*|\d+")


class UsageError(WithcacheError):
    exit_code = 2


class FetchError(WithcacheError):
    """A download that failed; the message says what, where and why (fetch.FetchFailed)."""


class LockedError(WithcacheError):
    """Another process holds the data dir's lock."""


class NginxError(WithcacheError):
    exit_code = 2
