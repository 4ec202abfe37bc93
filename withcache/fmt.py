"""Text for people: sizes, durations, times, and strings made safe to display.

One owner for every format a person reads, so the index, the report, `misses` and
the progress display agree (binary units, UTC, control characters shown, not obeyed).
"""

from __future__ import annotations

import time
import unicodedata


def human(n: float) -> str:
    """1536 -> '1.5 KiB' (binary units, as `ls -h` and nginx logs)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def duration(seconds: float) -> str:
    """75 -> '1m15s': an ETA or an elapsed time at a glance."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def iso(ts: float) -> str:
    """A Unix time as ISO 8601 UTC, for JSON and machine-read text."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def iso_or_none(ts: float | None) -> str | None:
    return iso(ts) if ts else None


def when(ts: float | None) -> str:
    """A Unix time as 'YYYY-MM-DD HH:MM' UTC for tables; '' for never."""
    if not ts:
        return ""
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts))


def visible(s: str) -> str:
    """Control, format and separator characters (NUL, ESC, bidi overrides...) written as
    \\uXXXX, so text taken from requests cannot spoof a terminal or a page."""
    if s.isprintable():
        return s
    return "".join(
        c if c == " " or unicodedata.category(c)[0] not in "CZ" else f"\\u{ord(c):04x}" for c in s
    )
