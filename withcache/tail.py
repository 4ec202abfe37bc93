"""Follow nginx's access log across rotation, one block of whole lines at a time.

The position is (inode, offset, the last bytes before the offset). The bytes make it
robust where inode and offset alone are not: an inode number reused by a new file,
a copytruncate that the new file then outgrew, a restart after either. Only whole
lines are handed out; a partial last line waits for its newline. Reading is pread()
of at most CHUNK bytes, so memory stays flat however big the log or its lines.

Change events come from watchdog (inotify on Linux): `Changes.wait()` returns as soon
as something in the log's directory changes, and after `timeout` otherwise, which is
the slow safety re-check, not a busy poll.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from withcache.store import Checkpoint

CHUNK = 1 << 20  # bytes per read: ~4,000 lines
MAX_LINE = 4 << 20  # a longer "line" is skipped and counted as garbage
TAIL = 128  # bytes kept before the offset to recognise our file
GRACE = 1.0  # seconds a renamed log keeps being read for late writes
COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".Z")

Warn = Callable[[str], None]
EVENTS = (FileModifiedEvent, FileCreatedEvent, FileMovedEvent, FileDeletedEvent)


@dataclass(frozen=True)
class Block:
    """Whole lines (each ending in a newline, possibly none) and the position after them."""

    data: bytes
    oversize: int  # lines longer than MAX_LINE that were skipped
    at: Checkpoint


@dataclass
class _File:
    """An open file being read; `kind` says what happens at its end."""

    fd: int
    ino: int
    offset: int
    tail: bytes
    kind: str  # "main": the log itself | "rotated": renamed away | "copy": copytruncate's copy
    grew: float  # monotonic time of the last read that returned data
    skipping: bool = False  # inside an oversize line


class Follower:
    """Reads the log at `path` from `start` (None: from its start), across rotation."""

    def __init__(
        self,
        path: Path,
        start: Checkpoint | None,
        *,
        warn: Warn = lambda _msg: None,
        chunk: int = CHUNK,
        max_line: int = MAX_LINE,
        grace: float = GRACE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.warn = warn
        self.chunk = chunk
        self.max_line = max_line
        self.grace = grace
        self.clock = clock
        self._start = start
        self._cur: _File | None = None
        self._after: _File | None = None  # continue here once _cur is drained
        self._rotated_at: float | None = None
        self._last = start or Checkpoint(0, 0, b"")

    @property
    def position(self) -> Checkpoint:
        f = self._cur
        if f is None:
            return self._last
        return Checkpoint(f.ino, f.offset, f.tail)

    @property
    def settling(self) -> bool:
        """A rotated file is still being watched for late writes: check again soon."""
        return self._cur is not None and self._cur.kind != "main"

    def read(self) -> Block | None:
        """The next block of whole lines, or None when nothing changed."""
        for _ in range(8):  # each turn either returns or moves to another file
            f = self._cur
            if f is None:
                if not self._open_main():
                    return None
                return Block(b"", 0, self.position)
            block = self._read_block(f)
            if block is not None:
                return block
            if not self._at_end(f):
                return None
        return None

    def close(self) -> None:
        for f in (self._cur, self._after):
            if f is not None:
                os.close(f.fd)
        self._cur = self._after = None

    # --- reading -----------------------------------------------------------------------

    def _read_block(self, f: _File) -> Block | None:
        t = len(f.tail)
        buf = os.pread(f.fd, t + self.chunk, f.offset - t)
        if buf[:t] != f.tail:
            self._rewound(f)
            return Block(b"", 0, self.position)
        data = buf[t:]
        if not data:
            return None
        if f.skipping:
            nl = data.find(b"\n")
            if nl >= 0:
                f.skipping = False
                data = data[: nl + 1]
            self._advance(f, data)
            return Block(b"", 0, self.position)
        nl = data.rfind(b"\n")
        if nl < 0:
            if len(data) < self.chunk:
                return None  # a partial last line: wait for its newline
            data = os.pread(f.fd, self.max_line + 1, f.offset)
            nl = data.find(b"\n")
            if nl < 0:
                if len(data) <= self.max_line:
                    return None
                f.skipping = True
                self._advance(f, data)
                return Block(b"", 1, self.position)
        block = data[: nl + 1]
        self._advance(f, block)
        return Block(block, 0, self.position)

    def _advance(self, f: _File, consumed: bytes) -> None:
        f.offset += len(consumed)
        f.tail = (f.tail + consumed[-TAIL:])[-TAIL:]
        f.grew = self.clock()

    # --- file changes ------------------------------------------------------------------

    def _at_end(self, f: _File) -> bool:
        """At the end of `f`: move on if it was rotated away. True if the file changed."""
        if f.kind == "main":
            try:
                st = os.stat(self.path)
            except (FileNotFoundError, NotADirectoryError):
                st = None
            if st is not None and st.st_ino == f.ino:
                return False
            f.kind = "rotated"  # renamed or deleted: nginx may write to it until it reopens
            self._rotated_at = self.clock()
        if f.kind == "rotated":
            self._pin_successor(f)
            last = max(f.grew, self._rotated_at or 0.0)
            if self.clock() - last < self.grace:
                return False
        self._finish(f)
        return True

    def _pin_successor(self, f: _File) -> None:
        """Hold the file that replaced `f` at the path, so that a second rotation during
        the grace period cannot make us skip it."""
        if self._after is not None:
            return
        fd = _open(self.path)
        if fd is None:
            return
        ino = os.fstat(fd).st_ino
        if ino == f.ino:
            os.close(fd)
            return
        self._after = _File(fd, ino, 0, b"", "main", self.clock())

    def _finish(self, f: _File) -> None:
        """Done with a rotated file or a copy: on to what comes after it."""
        size = os.fstat(f.fd).st_size
        if size > f.offset:
            self.warn(
                f"{self.path}: the rotated log ends in {size - f.offset} bytes without a "
                "newline; skipped"
            )
        self._last = self.position
        os.close(f.fd)
        self._cur, self._after = self._after, None
        self._rotated_at = None

    def _rewound(self, f: _File) -> None:
        """The bytes before our offset changed: copytruncate (or a rewrite) happened."""
        if f.kind != "main":  # a rotated file or copy shrank under us: leave it
            self.warn(f"{self.path}: a rotated log changed while being read; left it")
            self._finish(f)
            return
        copy = self._find(Checkpoint(f.ino, f.offset, f.tail), skip_ino=f.ino)
        if copy is None:
            self.warn(
                f"{self.path}: truncated with no copy found after byte {f.offset}; "
                "lines written since the last read may be missing"
            )
        f.offset, f.tail, f.skipping = 0, b"", False
        if copy is not None:
            self._cur, self._after = copy, f

    def _open_main(self) -> bool:
        fd = _open(self.path)
        if fd is None:
            return False
        st = os.fstat(fd)
        now = self.clock()
        main = _File(fd, st.st_ino, 0, b"", "main", now)
        start, self._start = self._start, None
        if start is None or start.offset == 0:
            self._cur = main
            return True
        if start.inode == st.st_ino and _holds(fd, start):
            main.offset, main.tail = start.offset, start.tail
            self._cur = main
            return True
        found = self._find(start, skip_ino=st.st_ino)
        if found is not None:
            self._cur, self._after = found, main
            self._rotated_at = now
            return True
        if _holds(fd, start):  # same bytes, new inode number (restored from a backup)
            main.offset, main.tail = start.offset, start.tail
            self._cur = main
            return True
        self.warn(
            f"{self.path}: the file at the checkpoint (inode {start.inode}, byte "
            f"{start.offset}) is gone; reading the current log from its start"
        )
        self._cur = main
        return True

    def _find(self, at: Checkpoint, skip_ino: int) -> _File | None:
        """The rotated sibling (access.log.1, access.log-2026...) holding position `at`.

        The file with the checkpoint's inode wins (rename rotation); otherwise the
        newest file with the same bytes before the offset (copytruncate's copy).
        """
        matches: list[tuple[bool, float, int, int]] = []  # (same inode, mtime, fd, inode)
        for p in _siblings(self.path):
            fd = _open(p)
            if fd is None:
                continue
            st = os.fstat(fd)
            if st.st_ino != skip_ino and _holds(fd, at):
                matches.append((st.st_ino == at.inode, st.st_mtime, fd, st.st_ino))
            else:
                os.close(fd)
        if not matches:
            return None
        matches.sort(reverse=True)
        for *_rest, fd, _ino in matches[1:]:
            os.close(fd)
        same, _mtime, fd, ino = matches[0]
        return _File(fd, ino, at.offset, at.tail, "rotated" if same else "copy", self.clock())


def _open(path: Path) -> int | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError, PermissionError, IsADirectoryError):
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def _holds(fd: int, at: Checkpoint) -> bool:
    """Does this file hold `at.tail` right before `at.offset`?"""
    t = len(at.tail)
    if at.offset < t or os.fstat(fd).st_size < at.offset:
        return False
    return os.pread(fd, t, at.offset - t) == at.tail


def _siblings(path: Path) -> list[Path]:
    try:
        names = os.listdir(path.parent)
    except OSError:
        return []
    return [
        path.parent / n
        for n in names
        if n.startswith(path.name) and n != path.name and not n.endswith(COMPRESSED)
    ]


class Changes:
    """Wakes the watcher when something in the log's directory changes (watchdog)."""

    def __init__(self, log: Path) -> None:
        self.directory = log.parent
        self.event = threading.Event()
        self._observer: BaseObserver | None = None

    def __enter__(self) -> Changes:
        self._start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        if self._observer is not None or not self.directory.is_dir():
            return
        handler = _Wake(self.event)
        observer = Observer()
        observer.schedule(handler, str(self.directory), event_filter=list(EVENTS))
        observer.daemon = True
        observer.start()
        self._observer = observer

    def wait(self, timeout: float) -> bool:
        """Until a change or `timeout` seconds; True if something changed."""
        self._start()  # the directory may have appeared since
        changed = self.event.wait(timeout)
        self.event.clear()
        return changed

    def wake(self) -> None:
        """Make the current or next wait() return at once (stop requests use this)."""
        self.event.set()

    def close(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join()
            self._observer = None


class _Wake(FileSystemEventHandler):
    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def on_any_event(self, event: FileSystemEvent) -> None:
        self.event.set()
