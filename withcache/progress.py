"""Progress of a sync: a live display on a terminal, plain log lines for cron.

Both receive the same events from worker threads; the live display redraws at
most a few times a second from its own thread so workers never wait on the tty.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TextIO

from withcache.fmt import duration, human


@dataclass
class _File:
    name: str
    total: int | None
    done: int = 0
    started: float = field(default_factory=time.monotonic)


class Progress:
    """Plain lines: one when a file starts (with size), one when it ends."""

    def __init__(self, out: TextIO | None = None, quiet: bool = False) -> None:
        self.out = out or sys.stderr
        self.quiet = quiet
        self.lock = threading.Lock()
        self.files: dict[str, _File] = {}
        self.count = 0
        self.finished = 0
        self.bytes_done = 0
        self.started = time.monotonic()

    def begin(self, count: int) -> None:
        self.count = count
        self.started = time.monotonic()

    def file_started(self, key: str, name: str, total: int | None) -> None:
        with self.lock:
            old = self.files.get(key)
            self.files[key] = _File(name, total, old.done if old else 0)

    def advance(self, key: str, n: int) -> None:
        with self.lock:
            f = self.files.get(key)
            if f is not None:
                f.done += n
            self.bytes_done += n

    def file_done(self, key: str, message: str, ok: bool = True) -> None:
        with self.lock:
            self.files.pop(key, None)
            self.finished += 1
            self._line(f"[{self.finished}/{self.count}] {message}", always=not ok)

    def note(self, message: str) -> None:
        with self.lock:
            self._line(message, always=True)

    def close(self) -> None:
        pass

    def _line(self, text: str, always: bool = False) -> None:
        if always or not self.quiet:
            print(text, file=self.out, flush=True)


class LiveProgress(Progress):
    """A redrawn block: overall bytes, rate and ETA, then one line per active file."""

    INTERVAL = 0.25

    def __init__(self, out: TextIO | None = None, quiet: bool = False) -> None:
        super().__init__(out, quiet)
        self._drawn = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.INTERVAL):
            with self.lock:
                self._redraw()

    def _clear(self) -> None:
        if self._drawn:
            self.out.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def _line(self, text: str, always: bool = False) -> None:
        self._clear()
        super()._line(text, always)

    def _redraw(self) -> None:
        self._clear()
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = self.bytes_done / elapsed
        lines = [f"{self.finished}/{self.count} files  {human(self.bytes_done)}  {human(rate)}/s"]
        for f in list(self.files.values())[:8]:
            lines.append("  " + _file_line(f))
        self.out.write("\n".join(lines) + "\n")
        self.out.flush()
        self._drawn = len(lines)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        with self.lock:
            self._clear()
            self.out.flush()


def _file_line(f: _File) -> str:
    elapsed = max(time.monotonic() - f.started, 1e-6)
    rate = f.done / elapsed
    name = f.name if len(f.name) <= 40 else f.name[:37] + "..."
    if f.total:
        pct = 100 * f.done / f.total
        eta = duration((f.total - f.done) / rate) if rate > 0 else "?"
        return f"{name:40} {pct:5.1f}% {human(f.done):>10} {human(rate):>10}/s ETA {eta}"
    return f"{name:40} {human(f.done):>10} {human(rate):>10}/s"


def for_stream(out: TextIO, quiet: bool = False) -> Progress:
    """A live display on a terminal, log lines otherwise (cron, CI, pipes)."""
    return LiveProgress(out, quiet) if out.isatty() else Progress(out, quiet)
