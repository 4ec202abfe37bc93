"""Interpreter x platform targets: what the resolver is told, and which wheels fit.

Pure. The manifest names wheel platform tags (`manylinux_2_28_x86_64`, `any`); the
resolver (uv) wants a target triple for its environment markers; picking files wants
the full PEP 425 tag list in preference order, as pip and uv rank them. A
`manylinux_2_28` target accepts every older glibc (2_27 ... 2_5 and the legacy
manylinux2014/2010/1 aliases), as an installer on such a system would.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

from packaging import tags

ANY = "any"
LINUX_ARCHES = ("x86_64", "aarch64")
UV_MANYLINUX = (17, 28, *range(31, 41))  # the glibc minors uv's --python-platform knows
LEGACY_MANYLINUX = {"manylinux2014": 17, "manylinux2010": 12, "manylinux1": 5}
WINDOWS = {
    "win_amd64": "x86_64-pc-windows-msvc",
    "win32": "i686-pc-windows-msvc",
    "win_arm64": "aarch64-pc-windows-msvc",
}
MAC_ARCHES = {"x86_64": "x86_64", "arm64": "aarch64", "universal2": "aarch64"}

_MANYLINUX = re.compile(r"^manylinux_2_(\d+)_(\w+)$")
_LEGACY = re.compile(r"^(manylinux2014|manylinux2010|manylinux1)_(\w+)$")
_MUSL = re.compile(r"^musllinux_1_(\d+)_(\w+)$")
_LINUX = re.compile(r"^linux_(\w+)$")
_MAC = re.compile(r"^macosx_(\d+)_(\d+)_(\w+)$")


def platform_problem(tag: str) -> str | None:
    """Why a platform tag cannot be a target, or None (used by manifest validation)."""
    try:
        uv_platform(tag)
    except ValueError as exc:
        return str(exc)
    return None


def _linux_arch(arch: str, tag: str) -> str:
    if arch not in LINUX_ARCHES:
        raise ValueError(
            f"{tag!r}: the resolver supports Linux on {' and '.join(LINUX_ARCHES)} only"
        )
    return arch


def uv_platform(tag: str) -> tuple[str | None, dict[str, str]]:
    """uv's --python-platform for a wheel platform tag, and environment it needs."""
    if tag == ANY:
        return None, {}
    if m := _MANYLINUX.match(tag):
        arch = _linux_arch(m.group(2), tag)
        minor = int(m.group(1))
        fits = [v for v in UV_MANYLINUX if v <= minor]
        return (f"{arch}-manylinux_2_{fits[-1]}" if fits else f"{arch}-manylinux2014"), {}
    if m := _LEGACY.match(tag):
        return f"{_linux_arch(m.group(2), tag)}-manylinux2014", {}
    if m := _MUSL.match(tag):
        return f"{_linux_arch(m.group(2), tag)}-unknown-linux-musl", {}
    if m := _LINUX.match(tag):
        return f"{_linux_arch(m.group(1), tag)}-unknown-linux-gnu", {}
    if m := _MAC.match(tag):
        mac_arch = MAC_ARCHES.get(m.group(3))
        if mac_arch is None:
            raise ValueError(f"{tag!r}: unknown macOS architecture {m.group(3)!r}")
        return f"{mac_arch}-apple-darwin", {
            "MACOSX_DEPLOYMENT_TARGET": f"{m.group(1)}.{m.group(2)}"
        }
    if tag in WINDOWS:
        return WINDOWS[tag], {}
    raise ValueError(
        f"{tag!r} is not a wheel platform tag this index can serve "
        "(e.g. manylinux_2_28_x86_64, musllinux_1_2_aarch64, macosx_11_0_arm64, "
        "win_amd64, any)"
    )


def compatible_platforms(tag: str) -> list[str]:
    """Every platform tag an installer on `tag` accepts, most preferred first."""
    if tag == ANY:
        return [ANY]
    m = _MANYLINUX.match(tag)
    legacy = _LEGACY.match(tag)
    if m or legacy:
        arch = m.group(2) if m else legacy.group(2)  # type: ignore[union-attr]
        top = int(m.group(1)) if m else LEGACY_MANYLINUX[legacy.group(1)]  # type: ignore[union-attr]
        out = []
        for minor in range(top, 4, -1):
            out.append(f"manylinux_2_{minor}_{arch}")
            out.extend(f"{n}_{arch}" for n, v in LEGACY_MANYLINUX.items() if v == minor)
        return [*out, f"linux_{arch}"]
    if m := _MUSL.match(tag):
        arch = m.group(2)
        return [f"musllinux_1_{v}_{arch}" for v in range(int(m.group(1)), -1, -1)] + [
            f"linux_{arch}"
        ]
    if m := _MAC.match(tag):
        return list(tags.mac_platforms((int(m.group(1)), int(m.group(2))), m.group(3)))
    return [tag]


@dataclass(frozen=True)
class Target:
    """One interpreter on one platform that the index must be able to serve."""

    python: str  # "3.12"
    platform: str  # a wheel platform tag, or "any" for pure-Python wheels only

    def __str__(self) -> str:
        return f"python {self.python} on {self.platform}"

    @property
    def version(self) -> tuple[int, int]:
        major, minor = self.python.split(".")
        return int(major), int(minor)

    @cached_property
    def ranking(self) -> dict[tags.Tag, int]:
        """PEP 425 tags this target installs, to their rank (0 is the most preferred)."""
        platforms = compatible_platforms(self.platform)
        interpreter = f"cp{self.version[0]}{self.version[1]}"
        ordered = [
            *tags.cpython_tags(self.version, None, platforms),
            *tags.compatible_tags(self.version, interpreter, platforms),
        ]
        if self.platform != ANY:  # pure wheels fit everywhere
            ordered.extend(tags.compatible_tags(self.version, interpreter, [ANY]))
        rank: dict[tags.Tag, int] = {}
        for t in ordered:
            rank.setdefault(t, len(rank))
        return rank

    def rank(self, wheel_tags: frozenset[tags.Tag]) -> int | None:
        """How much this target prefers a wheel with these tags; None if it cannot install it."""
        ranks = [self.ranking[t] for t in wheel_tags if t in self.ranking]
        return min(ranks) if ranks else None


def targets(pythons: tuple[str, ...], platforms: tuple[str, ...]) -> list[Target]:
    """Every python x platform; `any` adds no target of its own unless it is alone."""
    real = [p for p in platforms if p != ANY] or [ANY]
    return [Target(py, plat) for py in pythons for plat in real]
