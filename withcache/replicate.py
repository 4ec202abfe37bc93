"""`withcache replicate DEST...`: push the served tree to replicas with rsync.

A replica must never list or link a file it does not hold, even when `replicate` is
killed at any moment, and an unchanged tree must cost one quick rsync pass. So:

1. One `rsync --dry-run` per destination compares www/ with the replica. Nothing to
   do: done.
2. Otherwise a snapshot of www/ is taken: hard links under state/replicate/, made
   under the sync and placement locks, pages before the files they link (parents
   first), so the snapshot is a tree the center itself could have served.
3. From the snapshot, in this order, each file written by rsync to a temporary name
   and renamed (atomic per file):
   - state/replica.json (which marks the destination as a replica) and what says how
     to serve the tree (the private indexes and who may read them, groups kept);
   - the immutable files: everything under b/ and m/;
   - the pages (everything else), deepest first, so a project page arrives before
     the index that lists it;
   - deletions last, when nothing that remains links what goes.

rsync does the copying; this module only decides the order. Interrupted, the next
run starts over from a new dry run, and rsync's quick check (size and mtime) skips
what already arrived; `--partial-dir` keeps the part of a big blob copied so far.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from withcache import lock, placement, role
from withcache.errors import UsageError, WithcacheError
from withcache.fmt import duration, human
from withcache.layout import Layout

IMMUTABLE = ("b", "m")  # top-level dirs of www/ whose files never change per key
PARTIAL_DIR = ".rsync-partial"
INSTALL_HINT = "rsync is not installed; install it with: apt-get install rsync"
# -p: modes as at the center, where nginx's worker reads the same files; -H: a mirror
# file (www/m/) is a hard link to its blob, and stays one file on the replica; -O:
# directory times mean nothing to nginx (and the snapshot's are new), so they are
# neither copied nor compared. --modify-window=-1: rsync's quick check compares mtimes
# to the nanosecond (the receiver needs rsync 3.1.3 or later). By default it compares
# whole seconds, so a page rewritten in the same second at the same size (a replaced
# wheel: another sha256 of the same length) looked unchanged, stayed old on the replica,
# and listed a blob the deletion pass then removed.
BASE_OPTIONS = ("-r", "-t", "-O", "-p", "-H", "-8", "--timeout=300", "--modify-window=-1")
# Files under state/ that tell `withcache serve` how to serve www/: the private indexes
# and who may read them. They travel first, with the marker, so no private page or
# file reaches a replica before the rule that guards it.
SERVING_STATE = ("indexes.json", "auth/")
# Files under www/ that describe the host serving them, not the tree: each replica
# writes its own, and replicate neither copies nor deletes them.
HOST_FILES = ("metrics",)
_TEMP = re.compile(r"^\..*\.tmp$")  # atomic.write's temp files: never part of a tree
_TOTAL = re.compile(r"^Total transferred file size: ([\d,.]+)", re.MULTILINE)


class ReplicateError(WithcacheError):
    """rsync failed for one or more destinations (each named with rsync's message)."""

    def __init__(self, message: str, rsync_code: int | None = None) -> None:
        super().__init__(message)
        self.rsync_code = rsync_code


PARTIAL_TRANSFER = 23  # rsync: some files or attributes were not transferred


class RsyncMissing(WithcacheError):
    exit_code = 2


@dataclass(frozen=True)
class Destination:
    """An rsync destination that becomes (or is) a data dir."""

    spec: str  # as given: /srv/replica, host:/srv/replica, rsync://host/module/path
    local: Path | None  # set for a local path

    @property
    def root(self) -> str:
        """The rsync address of the destination directory, with a trailing slash."""
        if self.local is not None:
            return f"{self.local}/"
        return self.spec if self.spec.endswith((":", "/")) else self.spec + "/"


def destination(spec: str, source: Layout) -> Destination:
    """Parse DEST the way rsync does: `rsync://...` and `host::module` are a daemon,
    a colon before the first slash is ssh, anything else a local path."""
    if not spec or spec.startswith("-") or "\0" in spec or "\n" in spec:
        raise UsageError(f"replicate: {spec!r} is not an rsync destination")
    head = spec.split("/", 1)[0]
    if spec.startswith("rsync://") or ":" in head:
        return Destination(spec, None)
    path = Path(spec).absolute()
    root = source.root.resolve()
    resolved = path.resolve()
    if resolved == Path("/") or resolved == root or root in resolved.parents:
        raise UsageError(f"replicate: {spec} is the data dir itself or inside it")
    if resolved in root.parents:
        raise UsageError(f"replicate: {spec} contains the data dir {root}")
    return Destination(spec, path)


@dataclass(frozen=True)
class Changes:
    """What a dry run found: files to copy by kind, and files to delete."""

    state: int = 0  # the marker and the serving state
    immutable: int = 0
    pages: dict[int, int] = field(default_factory=dict)  # depth under www/ -> files
    deletions: int = 0

    @property
    def files(self) -> int:
        return self.state + self.immutable + sum(self.pages.values())

    @property
    def empty(self) -> bool:
        return not self.files and not self.deletions


def parse_itemized(out: str) -> Changes:
    """Read `rsync --dry-run --itemize-changes` output. Only each line's kind, top
    directory and depth matter, never the exact name, so rsync's escaping of odd
    names cannot mislead it (a name holds no slash)."""
    state = immutable = deletions = 0
    pages: dict[int, int] = {}
    for line in out.splitlines():
        if line.startswith("*deleting "):
            deletions += 1
            continue
        if len(line) < 13 or line[11] != " " or line[1] != "f":
            continue  # directories, and rsync's notes
        name = line[12:]
        if name.startswith("state/"):
            state += 1
        elif name.startswith(("www/b/", "www/m/")):
            immutable += 1
        elif name.startswith("www/"):
            depth = name.count("/")
            pages[depth] = pages.get(depth, 0) + 1
    return Changes(state, immutable, pages, deletions)


# Filter rules, first match wins. Every pass is scoped to www/, the marker and the
# serving state: a replica's own DB, run/ and log/ are never touched. The part of a blob that
# a killed run copied waits in a --partial-dir for the next blob pass, which resumes
# from it; the deletion pass removes what is left of blobs that are gone.
_SERVING = [
    "--filter=+ /state/",
    *(
        f"--filter=+ /state/{name.rstrip('/')}{'/***' if name.endswith('/') else ''}"
        for name in SERVING_STATE
    ),
]
_MARKER = [*_SERVING, f"--filter=+ /state/{role.MARKER}"]
_HOST = [f"--filter=- /www/{name}" for name in HOST_FILES]
_LIVE = [*_HOST, "--filter=- .*.tmp", "--filter=+ /www/***", *_SERVING, "--filter=- *"]
_SNAPSHOT = [*_HOST, "--filter=+ /www/***", *_MARKER, "--filter=- *"]
_STATE = [*_MARKER, "--filter=- *"]
_IMMUTABLE = [
    f"--filter=- {PARTIAL_DIR}/",
    "--filter=+ /www/",
    *(f"--filter=+ /www/{top}/***" for top in IMMUTABLE),
    "--filter=- *",
]
_DELETE = [*_HOST, "--filter=+ /www/***", "--filter=- *"]


def _pages_at(depth: int) -> list[str]:
    """Rules for the pages `depth` levels below www/ (1: index.html, catalog.json)."""
    return [
        *_HOST,
        *(f"--filter=- /www/{top}/" for top in IMMUTABLE),
        "--filter=+ /www/",
        "--filter=+ /www/**/",
        "--filter=+ /www/" + "*/" * (depth - 1) + "*",
        "--filter=- *",
    ]


@dataclass
class Outcome:
    """What one destination got."""

    dest: str
    changes: Changes = field(default_factory=Changes)
    bytes: int = 0
    seconds: float = 0.0
    error: str | None = None

    def line(self) -> str:
        if self.error:
            return f"{self.dest}: failed: {self.error}"
        took = duration(self.seconds)
        if self.changes.empty:
            return f"{self.dest}: unchanged ({took})"
        c = self.changes
        return (
            f"{self.dest}: {c.files} files copied ({human(self.bytes)}), "
            f"{c.deletions} deleted in {took}"
        )


Say = Callable[[str], None]


@dataclass
class Rsync:
    """Runs rsync with the options every pass shares (plus the operator's own)."""

    extra: Sequence[str] = ()
    binary: str = field(default_factory=lambda: os.environ.get("WITHCACHE_RSYNC") or "rsync")

    def __post_init__(self) -> None:
        found = shutil.which(self.binary)
        if found is None:
            raise RsyncMissing(INSTALL_HINT)
        self.binary = found

    def __call__(self, src: Path, dest: Destination, options: Sequence[str]) -> str:
        argv = [self.binary, *BASE_OPTIONS, *options, *self.extra, f"{src}/", dest.root]
        proc = subprocess.run(argv, capture_output=True, text=True, errors="replace")
        if proc.returncode != 0:
            detail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-3:]
            raise ReplicateError(
                f"rsync exited {proc.returncode}: " + " / ".join(detail or ["no message"]),
                proc.returncode,
            )
        return proc.stdout

    def dry_run(self, src: Path, dest: Destination, scope: Sequence[str]) -> Changes:
        return parse_itemized(
            self(src, dest, ["--dry-run", "--itemize-changes", "--delete", *scope])
        )


def run(
    layout: Layout,
    specs: Sequence[str],
    *,
    wait: bool = False,
    rsync_args: Sequence[str] = (),
    say: Say = lambda _msg: None,
) -> list[Outcome]:
    """Bring every destination in line with this data dir's www/; raise ReplicateError
    naming those that failed, after trying all of them."""
    dests = [destination(s, layout) for s in specs]
    rsync = Rsync(rsync_args)
    layout.ensure()
    busy = f"another replicate is running on {layout.root} (pid {{pid}}); pass --wait"
    outcomes = []
    with lock.hold(layout.state / "replicate.lock", busy, wait), _staging(layout) as staging:
        snap: Path | None = None
        for dest in dests:
            started = time.monotonic()
            out = Outcome(dest.spec)
            try:
                if dest.local is not None:
                    dest.local.mkdir(parents=True, exist_ok=True)
                if not rsync.dry_run(layout.root, dest, _LIVE).empty:
                    if snap is None:
                        snap = take_snapshot(layout, staging, wait=wait)
                    out.changes, out.bytes = push(rsync, snap, dest, say)
            except (ReplicateError, OSError) as exc:
                out.error = str(exc)
            out.seconds = time.monotonic() - started
            say(out.line())
            outcomes.append(out)
    failed = [o for o in outcomes if o.error]
    if failed:
        raise ReplicateError(
            f"{len(failed)} of {len(outcomes)} replicas failed:\n"
            + "\n".join(o.line() for o in failed)
        )
    return outcomes


def push(rsync: Rsync, snap: Path, dest: Destination, say: Say) -> tuple[Changes, int]:
    """Copy a snapshot to one destination in the safe order; return what changed and the
    bytes of file data sent."""
    changes = rsync.dry_run(snap, dest, _SNAPSHOT)
    sent = 0
    if changes.state:
        push_state(rsync, snap, dest)
    if changes.immutable:
        say(f"{dest.spec}: {changes.immutable} immutable files")
        out = rsync(snap, dest, [*_IMMUTABLE, f"--partial-dir={PARTIAL_DIR}", "--stats"])
        sent += _total(out)
    for depth in sorted(changes.pages, reverse=True):
        out = rsync(snap, dest, [*_pages_at(depth), "--prune-empty-dirs", "--stats"])
        sent += _total(out)
    if changes.pages:
        say(f"{dest.spec}: {sum(changes.pages.values())} pages")
    if changes.deletions:
        rsync(snap, dest, [*_DELETE, "--delete", "--existing", "--ignore-existing"])
    return changes, sent


def push_state(rsync: Rsync, snap: Path, dest: Destination) -> None:
    """The marker and the serving state, groups kept by name: the private indexes' read
    lists are readable by nginx's group only (0640), as at the center. Where the
    receiving user may not set that group, they are made readable by everyone instead,
    as `withcache users` does at a center in the same position."""
    try:
        rsync(snap, dest, [*_STATE, "-g"])
    except ReplicateError as exc:
        if exc.rsync_code != PARTIAL_TRANSFER:
            raise
        rsync(snap, dest, [*_STATE, "--chmod=Do+rx,Fo+r"])


def _total(stats: str) -> int:
    m = _TOTAL.search(stats)
    return int(m.group(1).replace(",", "").replace(".", "")) if m else 0


@contextlib.contextmanager
def _staging(layout: Layout) -> Iterator[Path]:
    """state/replicate/, emptied before and after (a killed run leaves a snapshot)."""
    staging = layout.state / "replicate"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def take_snapshot(layout: Layout, staging: Path, *, wait: bool) -> Path:
    """Hard links of www/ (plus the replica marker) under `staging`; returns its root.

    Held, in the order every writer takes them: the sync lock (no sync rewrites pages
    or prunes meanwhile), the Python index lock (no on-demand project is published) and
    the placement lock (no blob is replaced or removed). Writers that hold neither only add, and
    they add a file before the page that lists it: linking pages breadth-first
    (parents first) and blobs after them captures nothing a captured page lacks.
    """
    busy = (
        f"a sync is running on {layout.root} (pid {{pid}}); replicate copies the tree "
        "between syncs: wait for it or pass --wait"
    )
    root = staging / "snapshot"
    pages = layout.state / "pyindex.lock"  # whoever writes www/simple/ holds it
    with (
        lock.hold(layout.lock, busy, wait),
        lock.hold(pages, "index lock busy", wait=True),
        placement.held(layout),
    ):
        _link_pages(layout.www, root / "www")
        for top in IMMUTABLE:
            _link_tree(layout.www / top, root / "www" / top)
        for name in SERVING_STATE:
            src = layout.state / name
            if name.endswith("/"):
                _link_tree(src, root / "state" / name)
                _same_mode_and_group(src, root / "state" / name)
            elif src.is_file():
                (root / "state").mkdir(exist_ok=True)
                _link(str(src), root / "state" / name)
    (root / "state").mkdir(exist_ok=True)
    (root / "state" / role.MARKER).write_text(role.marker_text(layout))
    return root


def _same_mode_and_group(src: Path, dst: Path) -> None:
    """A snapshot directory as guarded as its original (auth/ is 0750, nginx's group)."""
    try:
        st = src.stat()
        dst.chmod(st.st_mode & 0o7777)
        os.chown(dst, -1, st.st_gid)
    except (FileNotFoundError, PermissionError):
        pass


def _link_pages(www: Path, dst: Path) -> None:
    """Every file of www/ outside b/ and m/, level by level from the top."""
    level = [(www, dst)]
    while level:
        deeper = []
        for src, out in level:
            out.mkdir(parents=True, exist_ok=True)
            for entry in _entries(src):
                if entry.is_dir(follow_symlinks=False):
                    if src == www and entry.name in IMMUTABLE:
                        continue
                    deeper.append((Path(entry.path), out / entry.name))
                elif entry.is_file(follow_symlinks=False) and not _TEMP.match(entry.name):
                    _link(entry.path, out / entry.name)
        level = deeper


def _link_tree(src: Path, dst: Path) -> None:
    """Every regular file below `src` (symlinks and temp files are never part of a tree)."""
    stack = [(src, dst)]
    while stack:
        here, out = stack.pop()
        entries = _entries(here)
        if not entries:
            continue
        out.mkdir(parents=True, exist_ok=True)
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                stack.append((Path(entry.path), out / entry.name))
            elif entry.is_file(follow_symlinks=False) and not _TEMP.match(entry.name):
                _link(entry.path, out / entry.name)


def _entries(d: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(d) as it:
            return sorted(it, key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _link(src: str, dst: Path) -> None:
    try:
        os.link(src, dst, follow_symlinks=False)
    except FileNotFoundError:
        pass  # removed since the directory was read: not part of this snapshot
    except OSError as exc:
        if exc.errno == 18:  # EXDEV
            raise ReplicateError(
                f"cannot snapshot {src}: state/ and www/ must be on one filesystem"
            ) from None
        raise
