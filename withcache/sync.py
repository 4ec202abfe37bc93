"""`withcache sync` as one library call: lock, resolve, plan, fetch, publish, index.

run() owns the order of the steps and holds the data dir's sync lock through all
of them, so a sync that is refused changes nothing and costs nothing. preview() is
the dry run: the same plan, from a read-only look at the state, writing nothing.
Every failure is collected in the Summary; one bad origin never stops the others.
The CLI only parses arguments and prints what these return.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from withcache import (
    budget,
    fetch,
    history,
    index,
    keys,
    lock,
    lockfile,
    metrics,
    nginx,
    placement,
    role,
    store,
    synced,
    transport,
)
from withcache.downloads import Downloads
from withcache.fmt import human
from withcache.layout import Layout
from withcache.lockfile import Lock
from withcache.manifest import Manifest, resolve_headers
from withcache.mirrors import publish as mirrors
from withcache.plan import Plan, Wanted, plan
from withcache.progress import Progress
from withcache.storeconfig import one


@dataclass(frozen=True)
class Options:
    jobs: int = 4
    refresh: bool = False
    prune: bool = False
    wait: bool = False
    index: bool = True  # re-render index.html and catalog.json when something changed
    policy: fetch.Policy = field(default_factory=fetch.Policy)
    lock: Lock | None = None  # --locked: every download held to the lock file


@dataclass
class Summary:
    """What one sync did; `failed` pairs each failed item with its one-line reason."""

    fetched: int = 0
    present: int = 0
    unchanged: int = 0
    removed: int = 0
    evicted: int = 0  # unlisted artifacts the disk budget evicted
    bytes: int = 0
    failed: list[tuple[Wanted, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return len(self.failed) + self.fetched + self.present + self.unchanged

    @property
    def changed(self) -> bool:
        return bool(self.fetched or self.removed or self.failed)

    def line(self) -> str:
        parts = [
            f"{self.fetched} fetched ({human(self.bytes)})",
            f"{self.present} present",
        ]
        if self.unchanged:
            parts.append(f"{self.unchanged} unchanged")
        if self.removed:
            parts.append(f"{self.removed} pruned")
        if self.evicted:
            parts.append(f"{self.evicted} evicted")
        parts.append(f"{len(self.failed)} failed")
        return ", ".join(parts) + f" in {self.seconds:.1f}s"


def wanted_from_manifest(manifest: Manifest) -> list[Wanted]:
    """The URL entries as sync work items (headers resolved from the environment)."""
    return [
        Wanted(
            key=e.key,
            url=e.url,
            name=keys.name(e.key),
            where=e.where,
            sha256=e.sha256,
            headers=tuple(resolve_headers(e).items()),
            header_hosts=frozenset(e.header_hosts),
        )
        for e in manifest.entries
    ]


@contextlib.contextmanager
def locked(layout: Layout, wait: bool = False) -> Iterator[None]:
    """Hold the data dir's sync lock; say who holds it when we cannot wait."""
    busy = (
        f"another sync is running on {layout.root} (pid {{pid}}); "
        "wait for it to finish or pass --wait"
    )
    with lock.hold(layout.lock, busy, wait):
        yield


def on_disk_sizes(layout: Layout, records: dict[str, store.Artifact]) -> dict[str, int]:
    """Sizes of the recorded blobs present on disk (one stat each, no hashing).

    Plain string paths: pathlib objects cost more than the stat on a 10,000-entry sync.
    """
    www = str(layout.www)
    sizes = {}
    for key in records:
        try:
            sizes[key] = os.stat(f"{www}/{keys.blob_relpath(key)}").st_size
        except (FileNotFoundError, NotADirectoryError):
            continue
    return sizes


def run(layout: Layout, manifest: Manifest, opts: Options, progress: Progress) -> Summary:
    """Bring the data dir in line with the manifests: the whole of `withcache sync`."""
    started = time.monotonic()
    role.refuse_writes(layout, "sync")
    layout.ensure()
    try:
        with locked(layout, opts.wait):
            began = time.time()
            try:
                summary = _run_locked(layout, manifest, opts, progress)
            except BaseException as exc:
                _record(layout, manifest, history.Run(began, time.time(), False, error=str(exc)))
                raise
            run = history.Run(
                began, time.time(), not summary.failed, summary.fetched, len(summary.failed)
            )
            _record(layout, manifest, dataclasses.replace(run, bytes=summary.bytes))
    finally:
        progress.close()
    summary.seconds = time.monotonic() - started
    return summary


def _record(layout: Layout, manifest: Manifest, run: history.Run) -> None:
    """The run for metrics and alerts, then the metrics file; never fails the sync."""
    with contextlib.suppress(OSError, sqlite3.Error):
        history.record(layout, run)
        cfg = one(manifest.store)
        metrics.write(layout, budget.limits(layout, cfg), manifest.listed_keys())


def _run_locked(layout: Layout, manifest: Manifest, opts: Options, progress: Progress) -> Summary:
    conn = store.connect(layout.db)
    try:
        records = store.artifacts(conn)
        the_plan = _plan(layout, manifest, records, opts, progress.note, save=True)
        refused: list[tuple[Wanted, str]] = []
        if opts.lock is not None:
            the_plan, refused = lockfile.enforce(the_plan, opts.lock, records)
            for w, why in refused:
                store.record_failure(conn, w.key, w.url, why)
        summary = Summary(present=len(the_plan.keep))
        for r in the_plan.remove:
            placement.remove(layout, conn, r.artifact.key)
            progress.note(f"pruned {r.artifact.url}")
            summary.removed += 1
    finally:
        conn.close()
    lim = budget.limits(layout, one(manifest.store), max_size=opts.policy.max_size)
    listed = manifest.listed_keys()
    policy = budget.policy_for(opts.policy, lim, layout, listed, binds=False)
    outcome = Downloads(layout, opts.jobs, policy, progress).run(the_plan.fetch)
    summary.fetched = outcome.fetched
    summary.unchanged = outcome.unchanged
    summary.bytes = outcome.bytes
    summary.failed = refused + outcome.failed
    summary.warnings = outcome.warnings
    _publish(layout, manifest, opts.prune)
    mirrors.publish(layout, manifest, progress.note)
    kept = budget.enforce(layout, lim, listed)
    summary.evicted = len(kept.evicted)
    for e in kept.evicted:
        progress.note(f"evicted {e.url} ({human(e.size)}): over the store's budget")
    if kept.over:
        summary.warnings.append(
            f"listed artifacts alone are {human(kept.over)} over the store's budget "
            f"({human(lim.budget or 0)}); nothing listed is evicted"
        )
    synced.save(layout, manifest.files)
    changed = summary.changed or summary.evicted
    if changed or not layout.artifact_headers.exists():
        warning = nginx.refresh_artifact_headers(layout)  # Content-Disposition, redirects
        if warning:
            summary.warnings.append(warning)
    if opts.index and (changed or not (layout.www / "index.html").exists()):
        index.render(layout)  # a no-op sync leaves it alone: 10,000 entries stay under 1 s
    return summary


def _plan(
    layout: Layout,
    manifest: Manifest,
    records: dict[str, store.Artifact],
    opts: Options,
    say: Callable[[str], None],
    *,
    save: bool,
    uv_cache: Path | None = None,
) -> Plan:
    wanted = wanted_from_manifest(manifest) + mirrors.wanted(manifest)
    if manifest.python:
        from withcache import pyindex  # resolving needs uv: loaded only when asked for

        wanted += pyindex.wanted(
            manifest, layout, records, say=say, save=save, uv_cache=uv_cache, refresh=opts.refresh
        )
    return plan(
        wanted,
        records,
        on_disk_sizes(layout, records),
        refresh=opts.refresh,
        prune=opts.prune,
        repin=mirrors.repin(layout.db, wanted),
    )


def _publish(layout: Layout, manifest: Manifest, prune: bool) -> None:
    """The front doors' pages, from what the store now holds (failed files left out)."""
    if manifest.python or (layout.www / "simple").exists():
        from withcache import pyindex

        pyindex.write_index(manifest, layout, prune=prune)
    if manifest.indexes or (layout.state / "indexes.json").exists():
        # after the mirror: a base: mirror root names the mirror's projects
        from withcache.indexes import definitions

        definitions.publish(layout, manifest.indexes)


def preview(
    layout: Layout, manifest: Manifest, opts: Options, say: Callable[[str], None]
) -> list[str]:
    """`sync --dry-run`: what would be fetched and pruned, with sizes from HEAD.

    Creates no file and no directory under the data dir: the state is read without
    opening it for writing, and Python requirements resolve with a throwaway uv cache.
    """
    records = store.read_artifacts(layout.db)
    with tempfile.TemporaryDirectory(prefix="withcache-dry-run-") as tmp:
        the_plan = _plan(layout, manifest, records, opts, say, save=False, uv_cache=Path(tmp))
    sizes = head_sizes([f.wanted for f in the_plan.fetch])
    return describe_plan(the_plan, sizes)


def head_sizes(wanted: Sequence[Wanted], timeout: float = 5.0, jobs: int = 8) -> dict[str, int]:
    """Sizes the origins announce (for `sync --dry-run`); unknown ones are left out.
    Redirects are followed as a download follows them, headers kept to their hosts."""
    policy = fetch.Policy(connect_timeout=timeout, read_timeout=timeout)
    clients = transport.Clients()

    def one(w: Wanted) -> tuple[str, int | None]:
        req = fetch.Request(w.url, w.key, dict(w.headers), header_hosts=w.header_hosts)
        try:
            resp, _hops, _url = fetch.open_final(clients.get(), req, req.headers, policy, "HEAD")
            with resp:
                resp.read()  # a HEAD's body is empty: reading it ends the response,
                fetch.keep_connection(resp)  # and its connection serves the next HEAD
                n = resp.headers.get("Content-Length")
                return w.key, int(n) if resp.status < 300 and n and n.isdigit() else None
        except fetch.FetchFailed:
            return w.key, None

    try:
        with ThreadPoolExecutor(jobs) as pool:
            return {k: n for k, n in pool.map(one, wanted) if n is not None}
    finally:
        clients.close()


def describe_plan(p: Plan, sizes: dict[str, int]) -> list[str]:
    """The reviewer's view: what would be fetched and pruned, with sizes where known."""
    lines = []
    total = 0
    for f in p.fetch:
        n = sizes.get(f.wanted.key)
        total += n or 0
        size = human(n) if n is not None else "size unknown"
        lines.append(f"fetch  {f.wanted.url}  ({size}, {f.reason})")
    for r in p.remove:
        lines.append(f"prune  {r.artifact.url}  ({human(r.artifact.size)})")
    lines.append(
        f"{len(p.fetch)} to fetch ({human(total)} known), {len(p.keep)} present, "
        f"{len(p.remove)} to prune"
    )
    return lines
