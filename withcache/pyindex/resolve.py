"""Resolve requirements with their dependencies, transitively, with uv.

A real resolver, not a hand-written one: `uv pip compile` evaluates environment
markers for the target interpreter and platform (pip's --python-version/--platform
do not), honours Requires-Python and yanks, reads PEP 658 metadata and falls back
to range requests, and is fast. It runs isolated from the operator's own pip/uv
configuration (--no-config, no UV_*/PIP_* variables), against the manifest's
upstream index plus its wheelhouse directories, and never builds an sdist
(no project's code runs on the cache host).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import NormalizedName, canonicalize_name

from withcache.errors import WithcacheError
from withcache.pyindex.targets import Target, uv_platform

TIMEOUT = 900.0


class ResolveError(WithcacheError):
    """The requirements cannot be resolved (or the resolver cannot run)."""


@dataclass(frozen=True)
class Pin:
    """One project at one version, as the resolver chose it."""

    project: NormalizedName
    version: str


def uv_binary() -> str:
    """The uv that ships with withcache (the `uv` package), else the one on PATH.

    Call it from one thread: find_uv_bin reads sysconfig, whose lazy set-up races."""
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        pass
    found = shutil.which("uv")
    if found is None:
        raise ResolveError("the python: section needs uv to resolve; install it: pip install uv")
    return found


@dataclass(frozen=True)
class Resolver:
    """How uv resolves for one python: section: the same for each of its targets.
    `refresh`: revalidate every page uv has cached (a refresh looks for new releases)."""

    uv: str
    index: str
    wheelhouse: tuple[Path, ...]
    sdists: bool
    cache_dir: Path
    refresh: bool = False

    def command(self, target: Target) -> tuple[list[str], dict[str, str]]:
        """The uv command line for one target, and the extra environment it needs."""
        platform, extra_env = uv_platform(target.platform)
        cmd = [
            self.uv, "pip", "compile", "-",
            "--no-config", "--no-header", "--no-annotate", "--quiet",
            "--python", sys.executable, "--no-python-downloads",
            "--python-version", target.python,
            "--default-index", self.index,
            "--cache-dir", str(self.cache_dir),
        ]  # fmt: skip
        if platform:
            cmd += ["--python-platform", platform]
        for d in self.wheelhouse:
            cmd += ["--find-links", str(d)]
        if self.refresh:
            cmd += ["--refresh"]
        cmd += ["--no-build"] if self.sdists else ["--only-binary", ":all:"]
        return cmd, extra_env

    def resolve(self, requirements: Sequence[str], target: Target) -> list[Pin]:
        """Pins for one target; ResolveError with the resolver's own words on failure."""
        cmd, extra = self.command(target)
        try:
            proc = subprocess.run(
                cmd,
                input="\n".join(requirements) + "\n",
                capture_output=True,
                text=True,
                env=clean_env(extra),
                timeout=TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            raise ResolveError(f"{target}: the resolver took longer than {TIMEOUT:.0f}s") from None
        if proc.returncode != 0:
            words = (proc.stderr or proc.stdout).strip().replace("\n", "\n  ")
            raise ResolveError(f"{target}: cannot resolve the requirements:\n  {words}")
        return parse_pins(proc.stdout)


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    """Our environment without the operator's uv and pip settings (they would add indexes)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "PIP_"))}
    env.update(extra)
    return env


def parse_pins(text: str) -> list[Pin]:
    """`name==version` lines of uv's output (comments and options skipped)."""
    pins = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip().rstrip("\\").strip()
        if not line or line.startswith("-"):
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement as exc:
            raise ResolveError(f"unexpected resolver output {raw!r}: {exc}") from None
        versions = [s.version for s in req.specifier if s.operator in ("==", "===")]
        if len(versions) != 1:
            raise ResolveError(f"unexpected resolver output {raw!r}: not pinned")
        pins.append(Pin(canonicalize_name(req.name), versions[0]))
    return pins


def resolve_all(
    requirements: Sequence[str],
    targets: Sequence[Target],
    index: str,
    wheelhouse: Sequence[Path],
    sdists: bool,
    cache_dir: Path,
    refresh: bool = False,
) -> dict[Target, list[Pin]]:
    """Every target, a few at a time (uv locks its cache between processes); every
    target's failure is reported, not just the first."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    resolver = Resolver(uv_binary(), index, tuple(wheelhouse), sdists, cache_dir, refresh)
    results: dict[Target, list[Pin]] = {}
    errors: list[str] = []
    with ThreadPoolExecutor(max(1, min(4, len(targets))), "pyindex-resolve") as pool:
        futures = {t: pool.submit(resolver.resolve, requirements, t) for t in targets}
        for t, fut in futures.items():
            try:
                results[t] = fut.result()
            except ResolveError as exc:
                errors.append(str(exc))
    if errors:
        raise ResolveError("\n".join(errors))
    return results
