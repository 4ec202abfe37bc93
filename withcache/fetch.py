"""Download one origin URL into state/partial/: resumable, hash-verified, retried.

The body is read straight into reusable 1 MiB buffers and written; sha256 runs
in a second thread over the same buffers (hashlib releases the GIL), so hashing
overlaps the network and the disk instead of adding to them. Large bodies go to
disk with O_DIRECT (see _PartFile). A partial file and a small JSON sidecar
(url, validators) survive a crash or a dropped connection; the next attempt sends
`Range` with `If-Range`, so it continues only when the origin still has the same
bytes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import mmap
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from withcache import atomic, fmt, transport
from withcache.errors import FetchError
from withcache.placement import Verified
from withcache.transport import Response

CHUNK = 1 << 20  # one read fills one buffer: the most we lose to a reset, the progress step
BUFFERS = 8
INLINE = 4 << 20  # hash a file's first bytes inline; a helper thread takes the rest
FLUSH_EVERY = 64 << 20
DIRECT_FROM = 8 << 20  # bodies from this size on (or of unknown size) bypass the page cache
ALIGN = 4096  # what O_DIRECT asks of a write's length and file offset (any block size)
WATCHDOG_TICK = 0.5  # seconds: how late a stalled read is cut at most

Progress = Callable[[int], None]


@dataclass(frozen=True)
class Request:
    """What to fetch and how to check it."""

    url: str
    key: str
    headers: dict[str, str] = field(default_factory=dict)
    sha256: str | None = None
    etag: str | None = None  # for a conditional re-fetch (--refresh)
    last_modified: str | None = None
    # Hosts besides the URL's own origin that may receive `headers` (after a redirect).
    header_hosts: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Result(Verified):
    """A finished download: the partial file is complete and verified."""

    resumed_from: int = 0


class FetchFailed(FetchError):
    """A download that failed; `retry` says whether trying again may help."""

    def __init__(self, message: str, *, retry: bool = False) -> None:
        super().__init__(message)
        self.retry = retry


class DiskFull(FetchFailed):
    """The data dir's filesystem is full (or at min_free); `total` is the download's size
    when known."""

    def __init__(self, total: int | None, wrote: int, min_free: int = 0) -> None:
        super().__init__("no space left on device")
        self.total = total
        self.wrote = wrote
        self.min_free = min_free


@dataclass(frozen=True)
class Policy:
    """Timeouts and retries; tests shrink them."""

    connect_timeout: float = 15.0
    read_timeout: float = 60.0
    attempts: int = 4
    backoff: float = 1.0
    # A download slower than this over any CHUNK fails (a trickle never ends otherwise:
    # the read timeout applies to each receive, and a byte a second satisfies it).
    min_rate: float = 8 << 10
    deadline: float | None = None  # seconds for a whole download, when set
    max_size: int = 64 << 30  # the most one download may write (an endless body stops)
    min_free: int = 0  # bytes the data dir's filesystem keeps free; a download stops first
    max_redirects: int = 20
    # Asked before a download of known size starts, with the bytes it will add: makes
    # room (the disk budget evicts) or raises FetchFailed. Then min_free is its job.
    make_room: Callable[[int], None] | None = None


def partial_paths(partial_dir: Path, key: str) -> tuple[Path, Path]:
    stem = hashlib.sha256(key.encode()).hexdigest()[:40]
    return partial_dir / f"{stem}.part", partial_dir / f"{stem}.json"


def fetch(
    session: transport.Client,
    req: Request,
    partial_dir: Path,
    policy: Policy = Policy(),
    progress: Progress | None = None,
    on_retry: Callable[[str], None] | None = None,
    on_length: Callable[[int | None], None] | None = None,
) -> Result | None:
    """Fetch with retries and backoff on connection errors and 5xx; raise FetchFailed.
    None means the origin answered 304: what we hold is current."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return _fetch_once(session, req, partial_dir, policy, progress, on_length)
        except FetchFailed as exc:
            if not exc.retry or attempt >= policy.attempts:
                raise
            if on_retry:
                on_retry(f"{exc}; retrying ({attempt}/{policy.attempts - 1})")
            time.sleep(policy.backoff * (2 ** (attempt - 1)))


def discard_partial(partial_dir: Path, key: str) -> None:
    for p in partial_paths(partial_dir, key):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _fetch_once(
    session: transport.Client,
    req: Request,
    partial_dir: Path,
    policy: Policy,
    progress: Progress | None,
    on_length: Callable[[int | None], None] | None = None,
) -> Result | None:
    part, meta_path = partial_paths(partial_dir, req.key)
    meta = _read_meta(meta_path)
    offset = 0
    headers = dict(req.headers)
    if meta.get("url") == req.url and part.exists():
        validator = meta.get("etag") or meta.get("last_modified")
        offset = part.stat().st_size
        if offset and validator and not str(validator).startswith("W/"):
            headers["Range"] = f"bytes={offset}-"
            headers["If-Range"] = str(validator)
        else:
            offset = 0
    if not offset:
        if req.etag:
            headers["If-None-Match"] = req.etag
        elif req.last_modified:
            headers["If-Modified-Since"] = req.last_modified

    resp, hops, final = open_final(session, req, headers, policy)
    with resp:
        if resp.status == 304:
            return None
        if resp.status == 416 and offset:
            discard_partial(partial_dir, req.key)  # our partial is not a prefix any more
            raise FetchFailed("origin refused the resume range; starting over", retry=True)
        if resp.status >= 400:
            raise FetchFailed(
                f"HTTP {resp.status} {resp.reason or ''}".strip(),
                retry=resp.status >= 500 or resp.status in (408, 429),
            )
        if resp.status == 206 and offset:
            _check_content_range(resp, offset)
        elif resp.status != 200:
            raise FetchFailed(f"unexpected HTTP {resp.status}")
        else:
            offset = 0  # the origin sent the whole file: start over
        etag = resp.headers.get("ETag")
        last_modified = resp.headers.get("Last-Modified")
        disposition = resp.headers.get("Content-Disposition")
        expected = _expected_total(resp, offset)
        if on_length:
            on_length(expected)
        _check_room(partial_dir, expected, offset, policy)
        sidecar = _Sidecar(
            meta_path, {"url": req.url, "etag": etag, "last_modified": last_modified}
        )
        if meta:  # an older one would describe other bytes than those about to be written
            sidecar.write()
        try:
            digest, size, synced = _stream_to(
                resp, part, offset, progress, _Limits(policy, partial_dir), expected, sidecar
            )
            keep_connection(resp)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            raise DiskFull(expected, _size(part)) from exc

    if expected is not None and size != expected:
        raise FetchFailed(f"connection broken after {size} of {expected} bytes", retry=True)
    if req.sha256 and digest != req.sha256:
        discard_partial(partial_dir, req.key)
        raise FetchFailed(f"sha256 mismatch: expected {req.sha256}, origin sent {digest}")
    return Result(
        part,
        size,
        digest,
        etag,
        last_modified,
        synced,
        disposition=disposition,
        redirects=hops,
        final_url=_without_query(final) if hops else None,
        resumed_from=offset,
    )


def keep_connection(resp: Response) -> None:
    """Give the connection back to the pool once the body has been read to its end.

    The body is read from http.client's response directly (_body_reader), so urllib3
    never learns it was consumed and would close the connection: every file of a sync
    would pay a new connection, and over https a new handshake. http.client marks a
    response closed once its whole body is read (Content-Length or last chunk); only
    then is the connection reusable. A connection the origin closed is noticed by the
    pool before its next use."""
    fp = getattr(resp, "_fp", None)
    isclosed = getattr(fp, "isclosed", None)
    if callable(isclosed) and isclosed():
        resp.release_conn()


def _without_query(url: str) -> str:
    """A redirect target worth recording: credentials and fragment dropped, and its
    query (often a short-lived signature) too, a bare '?' saying there was one."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{netloc}{parts.path}" + ("?" if parts.query else "")


def open_final(
    session: transport.Client,
    req: Request,
    headers: dict[str, str],
    policy: Policy,
    method: str = "GET",
) -> tuple[Response, int, str]:
    """GET (or HEAD), following redirects ourselves: the manifest's headers go only to
    the entry's own origin (and to hosts it names), a loop or a redirect to anything but
    http(s) is one clear error instead of a retried "cannot connect". Returns the final
    response, how many redirects led to it, and its URL (the shims tell clients that do
    not follow redirects, or name files after the last URL, what the origin did)."""
    url = req.url
    own = _origin(url)
    secret = {k.lower() for k in req.headers}
    seen = {url}
    for hop in range(policy.max_redirects + 1):
        try:
            resp = session.request(
                url, headers, (policy.connect_timeout, policy.read_timeout), method
            )
        except transport.Refused as exc:
            raise FetchFailed(f"refused: {_reason(exc)}") from exc
        except transport.Unreachable as exc:
            raise FetchFailed(f"cannot connect: {_reason(exc)}", retry=True) from exc
        location = resp.headers.get("Location") if resp.status in _REDIRECTS else None
        if location is None:
            return resp, hop, url
        resp.close()
        target = urljoin(url, location)
        scheme = urlsplit(target).scheme.lower()
        if scheme not in ("http", "https"):
            raise FetchFailed(f"{url} redirects to {target!r}: not an http(s) URL; not followed")
        if target in seen:
            raise FetchFailed(f"redirect loop: {url} leads back to {target}")
        seen.add(target)
        if resp.status == 303:
            headers = {k: v for k, v in headers.items() if k.lower() not in ("range", "if-range")}
        origin = _origin(target)
        if origin != own and not _named(origin, req.header_hosts):
            headers = {k: v for k, v in headers.items() if k.lower() not in secret}
        url = target
    raise FetchFailed(f"more than {policy.max_redirects} redirects from {req.url}")


_REDIRECTS = frozenset((301, 302, 303, 307, 308))


def _origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the default port filled in: what a header may go to."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or {"http": 80, "https": 443}.get(scheme)
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port


def _named(origin: tuple[str, str, int | None], hosts: frozenset[str]) -> bool:
    """Is this origin's host (or host:port) one the entry names for its headers?"""
    _scheme, host, port = origin
    return host in hosts or f"{host}:{port}" in hosts


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the filesystem holding `path`."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _check_room(partial_dir: Path, expected: int | None, offset: int, policy: Policy) -> None:
    """A download of known size that would leave less than min_free is refused at once."""
    if expected is None:
        return
    if policy.make_room is not None:
        policy.make_room(expected - offset)
        return
    if not policy.min_free:
        return
    left = free_bytes(partial_dir) - (expected - offset)
    if left < policy.min_free:
        raise FetchFailed(
            f"refused: {fmt.human(expected)} would leave {fmt.human(max(left, 0))} free on the "
            f"data dir's filesystem, under min_free {fmt.human(policy.min_free)}"
        )


class _Limits:
    """Stops a download that writes too much, leaves too little room, or is too slow.

    Size and room are checked between reads. Slowness cannot be seen from here, since
    one read blocks until its buffer is full: a watchdog thread closes the connection
    of a read that takes longer than CHUNK at min_rate (or passes the deadline).
    """

    def __init__(self, policy: Policy, partial_dir: Path) -> None:
        self.policy = policy
        self.partial_dir = partial_dir
        self.started = time.monotonic()
        self.tripped: str | None = None

    def check(self, size: int) -> None:
        p = self.policy
        if size > p.max_size:
            raise FetchFailed(
                f"stopped at {fmt.human(p.max_size)}: the most one download may write "
                "(max_size); the origin sent more"
            )
        if p.min_free and free_bytes(self.partial_dir) < p.min_free:
            raise DiskFull(None, size, min_free=p.min_free)

    def read_deadline(self) -> float:
        """When the read about to start must have finished."""
        p = self.policy
        due = time.monotonic() + max(1.0, CHUNK / p.min_rate)
        if p.deadline is not None:
            due = min(due, self.started + p.deadline)
        return due

    def why(self) -> str:
        p = self.policy
        if p.deadline is not None and time.monotonic() >= self.started + p.deadline:
            return f"took longer than the deadline of {p.deadline:g}s"
        return f"slower than the minimum rate of {fmt.human(p.min_rate)}/s"


class _Sidecar:
    """The validators a resume needs (url, ETag, Last-Modified), kept beside the partial
    file. Written only once a resume could use it: before the bytes of a body that does
    not fit in one read, or when a download stops early. A file that arrives in one read
    never has one: that saves a file create and rename per small download (a quarter of
    the time of a 1 MiB download here), and a crash loses at most one read's bytes."""

    def __init__(self, path: Path, meta: dict[str, str | None]) -> None:
        self.path = path
        self.meta = meta
        self.written = False

    def write(self) -> None:
        if not self.written:
            atomic.write(self.path, json.dumps(self.meta).encode(), durable=False)
            self.written = True

    def write_quietly(self) -> None:
        """On the way out of a failed download: a failure here must not hide that one."""
        with contextlib.suppress(OSError):
            self.write()


def _stream_to(
    resp: Response,
    part: Path,
    offset: int,
    progress: Progress | None,
    limits: _Limits,
    expected: int | None,
    sidecar: _Sidecar,
) -> tuple[str, int, bool]:
    """Append the body to `part` from `offset`; return (sha256 of the whole file, size,
    fsynced?). A file smaller than FLUSH_EVERY is left for placement to flush with the
    rest of its group; a larger one is fsynced here, mostly in the background."""
    hasher = _Hasher()
    out = _PartFile(part, offset, direct=expected is None or expected - offset >= DIRECT_FROM)
    fd = out.fd
    flusher = _Flusher(fd)
    watch = _watchdog.watch(resp)
    size = offset
    try:
        if offset:
            hasher.feed_file(part, offset)
        readinto = _body_reader(resp)
        while True:
            buf = hasher.free_buffer()
            watch.due(limits.read_deadline())
            try:
                n = readinto(buf)
            except Exception as exc:  # urllib3/http.client raise many types here
                hasher.give_back(buf)
                os.fsync(fd)
                if watch.fired:
                    raise FetchFailed(f"stopped after {size} bytes: {limits.why()}") from exc
                raise FetchFailed(
                    f"connection broken after {size} bytes: {_reason(exc)}", retry=True
                ) from exc
            if watch.fired:  # the watchdog shut the socket: what came is not the end
                hasher.give_back(buf)
                raise FetchFailed(f"stopped after {size} bytes: {limits.why()}")
            if not n:
                hasher.give_back(buf)
                break
            if expected is None or size + n < expected:
                sidecar.write()  # more is coming: from here on, a resume needs it
            out.write(memoryview(buf)[:n])
            hasher.feed(buf, n)
            size += n
            flusher.wrote(n)
            if progress:
                progress(n)
            limits.check(size)
        flusher.close()
        synced = flusher.started
        if synced:
            os.fsync(fd)  # only what the flusher has not written back yet
        return hasher.hexdigest(), size, synced
    except BaseException:
        if size:
            sidecar.write_quietly()  # what came stays for a resume
        raise
    finally:
        watch.done()
        flusher.close()
        os.close(fd)
        hasher.close()


class _PartFile:
    """The partial file, appended to; with O_DIRECT for a large body where it can be.

    A buffered write copies every byte into the page cache, and the kernel writes it
    back later; O_DIRECT hands our buffers to the disk instead, which saves that CPU
    (writing 1 GiB and fsyncing it here: 0.13-0.19 s of system time direct, 0.32-0.46 s
    buffered). The buffers are page-aligned mmaps, and a full one is a whole number of
    blocks. Small bodies stay buffered: each direct write waits for the disk. For a
    sync of 200 x 1 MiB that cost more than it saved with one job (1.83 s against
    1.44 s, and more CPU). Buffered writes go in pieces (atomic.write_all).

    What O_DIRECT cannot take goes buffered, from there on: the unaligned end of a body
    (its whole blocks still go direct), the rest of a short write, a resume at an
    unaligned offset, and a filesystem that refuses the flag (EINVAL, at open or at
    write). Durability is unchanged: the file is fsynced, or syncfs'd with its group,
    before its rename, which also makes its size and blocks durable."""

    def __init__(self, path: Path, offset: int, *, direct: bool = True) -> None:
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if offset else os.O_TRUNC)
        self.direct = direct and offset % ALIGN == 0 and hasattr(os, "O_DIRECT")
        if self.direct:
            try:
                self.fd = os.open(path, flags | os.O_DIRECT, 0o644)
                return
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self.direct = False
        self.fd = os.open(path, flags, 0o644)

    def write(self, view: memoryview) -> None:
        if self.direct and len(view) % ALIGN:
            whole = len(view) - len(view) % ALIGN
            self._write(view[:whole])
            view = view[whole:]
            self._buffered()
        self._write(view)

    def _write(self, view: memoryview) -> None:
        while view and self.direct:
            try:
                written = os.write(self.fd, view)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self._buffered()  # the filesystem took the flag at open, not at write
                continue
            view = view[written:]
            if view:
                self._buffered()  # the rest of a short write is not aligned any more
        atomic.write_all(self.fd, view)  # buffered: in pieces, see atomic.WRITE_PIECE

    def _buffered(self) -> None:
        if self.direct:
            flags = fcntl.fcntl(self.fd, fcntl.F_GETFL)
            fcntl.fcntl(self.fd, fcntl.F_SETFL, flags & ~os.O_DIRECT)
            self.direct = False


class _Watch:
    """One download's entry in the watchdog: when its current read must finish."""

    def __init__(self, dog: _Watchdog, sock: socket.socket | None) -> None:
        self._dog = dog
        self.sock = sock
        self.deadline = float("inf")
        self.fired = False

    def due(self, deadline: float) -> None:
        self.deadline = deadline

    def done(self) -> None:
        self._dog.forget(self)


class _Watchdog:
    """One thread for the whole process, waking once a second: it shuts the socket of a
    read that passed its deadline, which makes the blocked read return at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watches: set[_Watch] = set()
        self._thread: threading.Thread | None = None

    def watch(self, resp: Response) -> _Watch:
        w = _Watch(self, _socket_of(resp))
        with self._lock:
            self._watches.add(w)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
                self._thread.start()
        return w

    def forget(self, w: _Watch) -> None:
        with self._lock:
            self._watches.discard(w)

    def _run(self) -> None:
        while True:
            time.sleep(WATCHDOG_TICK)
            now = time.monotonic()
            with self._lock:
                late = [w for w in self._watches if w.deadline <= now and not w.fired]
            for w in late:
                w.fired = True
                if w.sock is not None:
                    with contextlib.suppress(OSError):
                        w.sock.shutdown(socket.SHUT_RDWR)


_watchdog = _Watchdog()


def _socket_of(resp: Response) -> socket.socket | None:
    conn = getattr(resp, "connection", None) or getattr(resp, "_connection", None)
    sock = getattr(conn, "sock", None)
    return sock if isinstance(sock, socket.socket) else None


class _Flusher:
    """fdatasync in the background every FLUSH_EVERY bytes, so the disk writes while
    the network reads and the final fsync (atomic placement needs it) is short
    instead of a pause of half a second per GiB. Its thread starts with the first
    flush: a small file costs no thread."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._pending = 0
        self._due = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while True:
            self._due.wait()
            self._due.clear()
            if self._stop:
                return
            with contextlib.suppress(OSError):
                os.fdatasync(self._fd)

    def wrote(self, n: int) -> None:
        self._pending += n
        if self._pending >= FLUSH_EVERY:
            self._pending = 0
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fdatasync", daemon=True)
                self._thread.start()
            self._due.set()

    @property
    def started(self) -> bool:
        return self._thread is not None

    def close(self) -> None:
        if not self._stop:
            self._stop = True
            if self._thread is not None:
                self._due.set()
                self._thread.join()


def _body_reader(resp: Response) -> Callable[[mmap.mmap], int]:
    """The fastest way to read the raw body into a buffer.

    urllib3's readinto() reads into a fresh bytes object and copies it; the
    http.client response underneath fills our buffer directly (measured: ~1.6x
    faster on loopback) and still raises IncompleteRead on a short body. Use it
    when the body needs no decoding, as with our `Accept-Encoding: identity`.
    """
    fp = getattr(resp, "_fp", None)
    encoding = resp.headers.get("Content-Encoding", "identity").lower()
    if encoding == "identity" and callable(getattr(fp, "readinto", None)):
        return fp.readinto  # type: ignore[no-any-return, union-attr]
    return lambda buf: resp.readinto(memoryview(buf))


_spare = threading.local()  # each sync worker keeps its buffers from file to file


class _Hasher:
    """sha256 over a small pool of reusable buffers, in a helper thread once a file is
    past INLINE bytes (hashlib releases the GIL, so hashing then overlaps the network
    and the disk). Below that, hashing inline costs less than starting a thread.

    The buffers (8 x 1 MiB) are allocated once per worker thread, not per file:
    zero-filling them cost milliseconds, most of the time of fetching a 1 MiB file.
    """

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self._free: queue.SimpleQueue[mmap.mmap] = queue.SimpleQueue()
        self._full: queue.SimpleQueue[tuple[mmap.mmap, int] | None] = queue.SimpleQueue()
        buffers = getattr(_spare, "buffers", None) or []
        _spare.buffers = None
        self._made = len(buffers)
        for buf in buffers:
            self._free.put(buf)
        self._thread: threading.Thread | None = None
        self._inline = 0
        self._done = False

    def _run(self) -> None:
        while (item := self._full.get()) is not None:
            buf, n = item
            self._h.update(memoryview(buf)[:n])
            self._free.put(buf)

    def feed_file(self, path: Path, length: int) -> None:
        """Hash the bytes a previous attempt already wrote (resume)."""
        with path.open("rb") as f:
            left = length
            while left:
                buf = self.free_buffer()
                n = f.readinto(memoryview(buf)[: min(CHUNK, left)])
                if not n:
                    self.give_back(buf)
                    raise FetchFailed("partial file shrank while resuming", retry=True)
                self.feed(buf, n)
                left -= n

    def free_buffer(self) -> mmap.mmap:
        """A buffer to read into: a spare one, a new one while fewer than BUFFERS exist
        (a small file needs one), else the next one the hashing thread gives back.
        Anonymous mmaps: page-aligned, as O_DIRECT writes need them."""
        if self._made < BUFFERS and self._free.empty():
            self._made += 1
            return mmap.mmap(-1, CHUNK)
        return self._free.get()

    def give_back(self, buf: mmap.mmap) -> None:
        self._free.put(buf)

    def feed(self, buf: mmap.mmap, n: int) -> None:
        if self._thread is None:
            if self._inline + n <= INLINE:
                self._inline += n
                self._h.update(memoryview(buf)[:n])
                self._free.put(buf)
                return
            self._thread = threading.Thread(target=self._run, name="sha256", daemon=True)
            self._thread.start()
        self._full.put((buf, n))

    def hexdigest(self) -> str:
        self.close()
        return self._h.hexdigest()

    def close(self) -> None:
        """Stop the thread (after it hashed everything fed); never leak it. Keep the
        buffers for this worker's next file when all of them came back."""
        if not self._done:
            if self._thread is not None:
                self._full.put(None)
                self._thread.join()
            self._done = True
            buffers = []
            while not self._free.empty():
                buffers.append(self._free.get())
            if len(buffers) == self._made:
                _spare.buffers = buffers


def _check_content_range(resp: Response, offset: int) -> None:
    cr = resp.headers.get("Content-Range", "")
    try:
        unit, _, rng = cr.partition(" ")
        start = int(rng.split("-", 1)[0])
    except ValueError:
        start = -1
    if unit != "bytes" or start != offset:
        raise FetchFailed(f"origin answered Range {offset}- with Content-Range {cr!r}")


def _expected_total(resp: Response, offset: int) -> int | None:
    length = resp.headers.get("Content-Length")
    if length is None or not length.isdigit():
        return None
    return offset + int(length)


def _read_meta(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _reason(exc: BaseException) -> str:
    """The innermost useful words of an urllib3 exception chain."""
    text = str(exc)
    inner = exc.__context__ or exc.__cause__
    while inner is not None and len(text) > 160:
        text = str(inner)
        inner = inner.__context__ or inner.__cause__
    return text[:300]
