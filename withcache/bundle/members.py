"""Writing and reading a bundle's members, as one tar stream or as a directory.

A tar is written by hand (tarfile's headers, our own copy loop): the bytes go from
each blob to the output with sendfile, 1 MiB at a time, with no Python-level buffer
in between. It is read with tarfile, member by member, in order, so a pipe (`-`)
works as well as a file on a USB disk.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, cast

from withcache.atomic import write_all

CHUNK = 1 << 20
BLOCK = 512
RECORD = 20 * BLOCK  # tar(1) pads an archive to a multiple of this


class Writer:
    """Where export puts members: a tar stream or a directory tree."""

    def add_bytes(self, name: str, data: bytes) -> None:
        raise NotImplementedError

    def add_file(self, name: str, src: int, size: int, *, verify: bool) -> str:
        """Copy `size` bytes of the open file `src`; return the sha256 when `verify`
        (else ''). A file shorter than `size` raises OSError (EIO)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def _copy(src: int, dst: int, size: int, verify: bool) -> str:
    """size bytes from src to dst: sendfile when no hash is wanted, else read+hash+write."""
    if not verify:
        left = size
        offset = 0
        try:
            while left:
                n = os.sendfile(dst, src, offset, min(left, 1 << 30))
                if n == 0:
                    raise OSError(errno.EIO, f"file ended {left} bytes early")
                offset += n
                left -= n
            return ""
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOSYS) or offset:
                raise
    h = hashlib.sha256()
    buf = bytearray(CHUNK)
    left = size
    os.lseek(src, 0, os.SEEK_SET)
    while left:
        n = os.readv(src, [memoryview(buf)[: min(CHUNK, left)]])
        if n == 0:
            raise OSError(errno.EIO, f"file ended {left} bytes early")
        view = memoryview(buf)[:n]
        if verify:
            h.update(view)
        write_all(dst, view)
        left -= n
    return h.hexdigest() if verify else ""


class TarWriter(Writer):
    """A POSIX (pax) tar stream on an open file descriptor (a file or a pipe)."""

    def __init__(self, fd: int, mtime: float) -> None:
        self.fd = fd
        self.mtime = int(mtime)
        self.written = 0

    def _header(self, name: str, size: int) -> None:
        info = tarfile.TarInfo(name)
        info.size = size
        info.mtime = self.mtime
        info.mode = 0o644
        info.uname = info.gname = ""
        data = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        write_all(self.fd, data)
        self.written += len(data)

    def _pad(self, size: int) -> None:
        rest = -size % BLOCK
        if rest:
            write_all(self.fd, bytes(rest))
        self.written += size + rest

    def add_bytes(self, name: str, data: bytes) -> None:
        self._header(name, len(data))
        write_all(self.fd, data)
        self._pad(len(data))

    def add_file(self, name: str, src: int, size: int, *, verify: bool) -> str:
        self._header(name, size)
        digest = _copy(src, self.fd, size, verify)
        self._pad(size)
        return digest

    def close(self) -> None:
        end = 2 * BLOCK + (-(self.written + 2 * BLOCK) % RECORD)
        write_all(self.fd, bytes(end))
        self.written += end


class DirWriter(Writer):
    """A directory tree: each member a file (fsynced: the copy may go to a USB disk)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _open(self, name: str) -> int:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)

    def add_bytes(self, name: str, data: bytes) -> None:
        fd = self._open(name)
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def add_file(self, name: str, src: int, size: int, *, verify: bool) -> str:
        fd = self._open(name)
        try:
            digest = _copy(src, fd, size, verify)
            os.fsync(fd)
        finally:
            os.close(fd)
        return digest

    def close(self) -> None:
        return None


# --- reading ----------------------------------------------------------------------------------


@dataclass
class Member:
    """One member as it arrives; `stream` is readable until the next member is asked for."""

    name: str
    size: int
    stream: BinaryIO
    fd: int | None = None  # when the data sits in a local file: its descriptor and offset
    offset: int = 0


class Truncated(Exception):
    """The tar ended, or broke, in the middle: the message says where."""


def tar_members(source: Path | BinaryIO) -> Iterator[Member]:
    """Regular-file members of a tar, in order; raise Truncated where it breaks off.
    A tar file's data is read in place (pread); a pipe's through tarfile, in order."""
    with contextlib.ExitStack() as stack:
        fd: int | None = None
        try:
            if isinstance(source, Path):
                f = stack.enter_context(source.open("rb"))
                fd = f.fileno()
                tf = tarfile.open(fileobj=f, mode="r:")  # noqa: SIM115 - closed by the stack
            else:
                tf = tarfile.open(fileobj=source, mode="r|")  # noqa: SIM115 - closed by the stack
        except tarfile.TarError as exc:
            raise Truncated(f"not a readable tar: {exc}") from None
        stack.enter_context(tf)
        yield from _members(tf, fd)


def _members(tf: tarfile.TarFile, fd: int | None) -> Iterator[Member]:
    while True:
        try:
            info = tf.next()
        except tarfile.TarError as exc:
            raise Truncated(f"damaged or cut off at byte {tf.offset:,}: {exc}") from None
        if info is None:
            return
        if not info.isfile():
            continue
        if fd is not None:  # read the data in place: no copy through tarfile's buffers
            piece = _Slice(fd, info.offset_data, info.size, info.name)
            yield Member(info.name, info.size, cast(BinaryIO, piece), fd, info.offset_data)
            continue
        stream = tf.extractfile(info)
        if stream is None:  # pragma: no cover - a regular file always has one
            continue
        with contextlib.closing(stream):
            yield Member(info.name, info.size, cast(BinaryIO, _Guarded(stream, info.name)))


class _Slice:
    """A member's data in a tar file, read with pread; a file that ends early is Truncated."""

    def __init__(self, fd: int, offset: int, size: int, name: str) -> None:
        self._fd = fd
        self._pos = offset
        self._left = size
        self._name = name

    def read(self, n: int = -1) -> bytes:
        want = self._left if n < 0 else min(n, self._left)
        if not want:
            return b""
        data = os.pread(self._fd, want, self._pos)
        if not data:
            raise Truncated(f"{self._name}: cut off {self._left:,} bytes before its end")
        self._pos += len(data)
        self._left -= len(data)
        return data


class _Guarded:
    """A member's stream whose read errors (tar cut off mid-member) become Truncated."""

    def __init__(self, stream: IO[bytes], name: str) -> None:
        self._stream = stream
        self._name = name

    def read(self, n: int = -1) -> bytes:
        try:
            return self._stream.read(n)
        except (tarfile.TarError, EOFError) as exc:
            raise Truncated(f"{self._name}: cut off ({exc})") from None
