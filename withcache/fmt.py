"""Text for people: sizes, durations, times, and strings made safe to display.

One owner for every format a person reads, so the index, the report, `misses` and
the progress display agree (binary units, UTC, control characters shown, not obeyed).
"""

from __future__ import annotations

import json
import re
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


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """'7d', '12h', '30m', '2w', '90s' -> seconds (`misses --since`, `python.refresh`)."""
    number, unit = text[:-1], text[-1:].lower()
    if unit not in _UNITS or not number.isdigit() or not number.isascii():
        raise ValueError(f"{text!r} is not a duration like 7d, 12h, 30m or 2w")
    return int(number) * _UNITS[unit]


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


_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGTP]?)(?:i?B)?\s*$", re.IGNORECASE)
_POWERS = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5}


def parse_size(text: str) -> int:
    """'64G', '500 MiB', '1.5T', '4096' -> bytes. Units are binary (K = 1024) whether or
    not an 'i' is written: disk sizes in a lab are read off `df -h`, which means GiB."""
    m = _SIZE.match(text)
    if m is None:
        raise ValueError(f"{text!r} is not a size like 4096, 500M, 64G or 1.5T")
    return int(float(m.group(1)) * 1024 ** _POWERS[m.group(2).upper()])


# Anything but printable ASCII and the newlines of indented JSON: looked at one by one.
_NOT_PLAIN = re.compile("[^\x20-\x7e\n]")


_HIDDEN = {"Cc", "Cf", "Cs", "Zl", "Zp"}


def _escape_hidden(m: re.Match[str]) -> str:
    c = m.group()
    if unicodedata.category(c) not in _HIDDEN:
        return c
    n = ord(c)
    if n < 0x10000:
        return f"\\u{n:04x}"
    n -= 0x10000  # JSON escapes beyond the BMP as a surrogate pair
    return f"\\u{0xD800 + (n >> 10):04x}\\u{0xDC00 + (n & 0x3FF):04x}"


def json_text(obj: object, indent: int | None = None) -> str:
    """json.dumps that keeps readable Unicode as is and escapes the invisible kind (DEL,
    C1 controls, bidi overrides, zero-width and separator characters), so the JSON
    means the same and cannot spoof a terminal."""
    return _NOT_PLAIN.sub(_escape_hidden, json.dumps(obj, indent=indent, ensure_ascii=False))
