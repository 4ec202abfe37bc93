"""Fetch one file from the first of several sources that has it, every pin checked.

Each source gets one attempt in turn; a 404, a 5xx, a timeout, a dropped connection
or bytes that fail a pin send the download on to the next source. When every source
failed and some failure may pass (a 5xx, a timeout, a drop), the round is repeated
after a backoff, up to the policy's attempts. The partial file is the key's, so a
source that dropped the connection is resumed on the next round (its URL is in the
partial's sidecar); a different source starts it over. sha256 is checked by
fetch.fetch while the bytes stream; BLAKE2B, SHA512 and the size afterwards, by
reading the finished partial once.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from withcache import fetch, transport
from withcache.mirrors.tree import Placement
from withcache.plan import Wanted

CHUNK = 1 << 20
ALGOS = ("blake2b", "sha512")  # hashlib names of the pins checked after the download


@dataclass(frozen=True)
class Served(fetch.Result):
    """A verified download and the source URL that served it."""

    served_by: str = ""


def fetcher_for(w: Wanted) -> Callable[..., fetch.Result | None]:
    """fetch.fetch for a plain artifact; for one with fallback sources or pins besides
    sha256, fetch_first over every source."""
    if not w.fallbacks and not w.digests:
        return fetch.fetch
    return functools.partial(fetch_first, urls=(w.url, *w.fallbacks), digests=w.digests)


def via(w: Wanted, result: fetch.Result) -> str:
    """' from <source>' for a download a fallback source served, else ''."""
    if isinstance(result, Served) and result.served_by and result.served_by != w.url:
        return f" from {result.served_by}"
    return ""


def mirror_placement(w: Wanted, result: fetch.Result) -> Placement | None:
    """For a mirror file: its place under /m/, the source that served it, the pins it
    passed (None for any other artifact)."""
    if w.mirror is None:
        return None
    by = result.served_by if isinstance(result, Served) and result.served_by else w.url
    return Placement(w.mirror, by, pins_text(w.digests))


def fetch_first(
    session: transport.Client,
    req: fetch.Request,
    partial_dir: Path,
    policy: fetch.Policy = fetch.Policy(),  # noqa: B008 (frozen)
    progress: fetch.Progress | None = None,
    on_retry: Callable[[str], None] | None = None,
    on_length: Callable[[int | None], None] | None = None,
    *,
    urls: Sequence[str],
    digests: Sequence[tuple[str, str]] = (),
    sleep: Callable[[float], None] = time.sleep,
) -> Served | None:
    """Try `urls` in order (rounds of one attempt each); raise FetchFailed naming what
    each source did when none served bytes that pass every pin."""
    once = dataclasses.replace(policy, attempts=1)
    rounds = max(1, policy.attempts)
    why: dict[str, str] = {}
    urls = resuming_first(urls, partial_dir, req.key)
    for round_ in range(rounds):
        transient = False
        for url in urls:
            try:
                result = fetch.fetch(
                    session,
                    dataclasses.replace(req, url=url),
                    partial_dir,
                    once,
                    progress=progress,
                    on_length=on_length,
                )
            except fetch.DiskFull:
                raise
            except fetch.FetchFailed as exc:
                why[url] = str(exc)
                transient = transient or exc.retry
                if on_retry and len(urls) > 1:
                    on_retry(f"source {url}: {exc}; trying the next one")
                continue
            if result is None:
                return None  # 304: what we hold is current
            problem = pin_problem(result.path, result.size, digests)
            if problem is not None:
                fetch.discard_partial(partial_dir, req.key)
                why[url] = problem
                if on_retry and len(urls) > 1:
                    on_retry(f"source {url}: {problem}; trying the next one")
                continue
            fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
            return Served(**fields, served_by=url)
        if not transient or round_ == rounds - 1:
            break
        if on_retry:
            on_retry(f"no source served it; trying them again ({round_ + 1}/{rounds - 1})")
        sleep(policy.backoff * (2**round_))
    if len(urls) == 1:
        raise fetch.FetchFailed(why[urls[0]])
    raise fetch.FetchFailed(
        "no source served it: " + "; ".join(f"{u}: {why.get(u, 'not tried')}" for u in urls)
    )


def resuming_first(urls: Sequence[str], partial_dir: Path, key: str) -> Sequence[str]:
    """The source a partial download came from first: another source's answer would
    start the file over (and one serving wrong bytes would throw the partial away on
    every attempt). The partial's sidecar (fetch.py) names its URL."""
    _, meta = fetch.partial_paths(partial_dir, key)
    try:
        url = json.loads(meta.read_text()).get("url")
    except (OSError, ValueError, AttributeError):
        return urls
    if url not in urls or url == urls[0]:
        return urls
    return [url, *(u for u in urls if u != url)]


def pin_problem(path: Path, size: int, digests: Sequence[tuple[str, str]]) -> str | None:
    """Why a finished download fails its pins besides sha256 (one read for all), or None."""
    wanted = dict(digests)
    want_size = wanted.pop("size", None)
    if want_size is not None and int(want_size) != size:
        return f"size mismatch: expected {want_size} bytes, source sent {size}"
    if not wanted:
        return None
    hashers = {algo: hashlib.new(algo) for algo in wanted}
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            for h in hashers.values():
                h.update(chunk)
    for algo, expected in wanted.items():
        got = hashers[algo].hexdigest()
        if got != expected:
            return f"{algo} mismatch: expected {expected}, source sent {got}"
    return None


def pins_text(digests: Sequence[tuple[str, str]]) -> str:
    """The pins besides sha256 a placed file passed, as one comparable string."""
    return ",".join(f"{algo}={value}" for algo, value in sorted(digests))
