"""The manifest's `store:` section: how much disk the cache may use.

```yaml
store:
  budget: 500G      # bytes, or a percentage of the data dir's filesystem: 80%
  min_free: 5%      # or bytes: 20G
  max_size: 64G     # the most one download of unknown size may write
```

Validated like the rest of a manifest (file:line problems, no disk or network access:
`withcache check` is a pull-request gate). Percentages stay percentages here; they
become bytes only against a real filesystem (`resolve`). One file at most may hold the
section: two budgets for one data dir would leave the reader guessing which wins.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from withcache.errors import Problem
from withcache.fmt import parse_size
from withcache.yamlnodes import Ctx, mapping, show
from withcache.yamlnodes import line as line_of

KEYS = {"budget", "min_free", "max_size"}


@dataclass(frozen=True)
class Amount:
    """A size as written: bytes, or a percentage of the filesystem."""

    bytes: int | None = None
    percent: float | None = None

    def of(self, filesystem: int) -> int:
        """Bytes, with a percentage taken of `filesystem` bytes."""
        if self.percent is not None:
            return int(filesystem * self.percent / 100)
        return self.bytes or 0

    def __str__(self) -> str:
        if self.percent is not None:
            return f"{self.percent:g}%"
        return str(self.bytes)


@dataclass(frozen=True)
class StoreConfig:
    """One manifest file's `store:` section, validated."""

    file: str
    line: int
    budget: Amount | None = None
    min_free: Amount | None = None
    max_size: int | None = None

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def parse(node: yaml.Node, ctx: Ctx) -> list[StoreConfig]:
    """Validate a `store:` section; [StoreConfig], or [] after recording problems."""
    before = len(ctx.problems)
    m = mapping(node, ctx, "store", KEYS)
    if m is None:
        return []
    budget = _amount(m["budget"], ctx, "store.budget") if "budget" in m else None
    min_free = _amount(m["min_free"], ctx, "store.min_free", zero=True) if "min_free" in m else None
    max_size = None
    if "max_size" in m:
        a = _amount(m["max_size"], ctx, "store.max_size", percent=False)
        max_size = a.bytes if a else None
    if len(ctx.problems) > before:
        return []
    return [StoreConfig(ctx.file, line_of(node), budget, min_free, max_size)]


def _amount(
    node: yaml.Node, ctx: Ctx, what: str, *, percent: bool = True, zero: bool = False
) -> Amount | None:
    text = str(node.value).strip() if isinstance(node, yaml.ScalarNode) else None
    example = "500G, 20G or 80%" if percent else "64G or 500M"
    if not text:
        ctx.add(node, f"{what} must be a size like {example}, got {show(node)}")
        return None
    if text.endswith("%"):
        if not percent:
            ctx.add(node, f"{what} must be a size in bytes like {example}, not a percentage")
            return None
        try:
            p = float(text[:-1])
        except ValueError:
            p = -1.0
        if not (0 < p <= 100 or (zero and p == 0)):
            ctx.add(node, f"{what} must be a percentage above 0 and at most 100%, got {text!r}")
            return None
        return Amount(percent=p)
    try:
        n = parse_size(text)
    except ValueError:
        ctx.add(node, f"{what} must be a size like {example}, got {text!r}")
        return None
    if n <= 0 and not zero:
        ctx.add(node, f"{what} must be more than 0, got {text!r}")
        return None
    return Amount(bytes=n)


def second_sections(configs: tuple[StoreConfig, ...]) -> list[Problem]:
    """Every `store:` section after the first is a problem at its own file:line."""
    return [
        Problem(
            c.file,
            c.line,
            f"a second store: section; {configs[0].where} already sets the store's limits "
            "(one manifest file may hold it)",
        )
        for c in configs[1:]
    ]


def one(configs: tuple[StoreConfig, ...]) -> StoreConfig | None:
    """The store section of a validated manifest, if any."""
    return configs[0] if configs else None
