"""One process per job per data dir: an flock'd file that also names its holder."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from withcache.errors import LockedError


@contextmanager
def hold(path: Path, busy: str, wait: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on `path`; the kernel drops it if we die (even kill -9).

    When another process holds it and we may not wait, raise LockedError with
    `busy` formatted with that process's pid ({pid}).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise LockedError(busy.format(pid=holder)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
