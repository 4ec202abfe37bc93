"""Errors the CLI turns into one-line messages and exit codes; anything else is a bug."""

from __future__ import annotations

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
        return f"{self.file}:{self.line}: {self.message}"


@dataclass
class ManifestError(WithcacheError):
    """Every problem found in the manifests, not just the first."""

    problems: list[Problem] = field(default_factory=list)
    exit_code = 2

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


class UsageError(WithcacheError):
    exit_code = 2


class FetchError(WithcacheError):
    """A download that failed; the message says what, where and why (fetch.FetchFailed)."""


class LockedError(WithcacheError):
    """Another process holds the data dir's lock."""


class NginxError(WithcacheError):
    exit_code = 2
