#!/usr/bin/env python3
"""pyindex: installing from withcache's Python index, and syncing one.

Everything on loopback; wheels built here (tests/pyindex_upstream.py), no network.
  - install: `pip install top` (top has 20 dependencies, every wheel 512 KiB, PEP 658
    metadata upstream) into a fresh venv from `withcache serve` (nginx, our static
    /simple/ pages with hashes and metadata) vs from the same wheels in a plain PEP 503
    directory tree served by `python -m http.server` (the baseline). The same with
    `uv pip install` (fresh cache each run). pip and uv run isolated from this
    machine's pip/uv configuration. Rounds interleave the servers; ratios are paired.
  - sync: a 200-file index (100 projects x wheels for Python 3.11 and 3.12, 64 KiB
    each, with PEP 658 metadata: 400 artifacts) from a loopback upstream: `withcache
    sync` of the python: section into an empty data dir (resolve with uv, read 100
    project pages, fetch 400 files, render) and again with everything present (the no-op
    a cron job pays), each against `withcache sync` of the very same 400 URLs listed as
    pinned artifacts: entries (the baseline: what the front door adds to plain mirroring).
--quick: 2 rounds, a 50-file index.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import common as c

from tests.origin import Origin
from tests.pyindex_install import clean_env, pip_venv, uv_bin
from tests.pyindex_upstream import Upstream

DEPS = 20
SYNC_PROJECTS = 100
WHEEL_PAYLOAD = 512 * 1024  # install case
SYNC_PAYLOAD = 64 * 1024  # sync case
TARGET_TAGS = {
    "3.11": "cp311-cp311-manylinux_2_28_x86_64",
    "3.12": "cp312-cp312-manylinux_2_28_x86_64",
}


def payload(seed: str, size: int = WHEEL_PAYLOAD) -> bytes:
    """Incompressible, deterministic bytes (a wheel's bulk)."""
    return hashlib.shake_256(seed.encode()).digest(size)


def install_upstream() -> Upstream:
    up = Upstream()
    deps = [f"bench-dep-{i:02d}" for i in range(1, DEPS + 1)]
    up.add("bench-top", "1.0", deps, payload=payload("top"), pep658=True)
    for d in deps:
        up.add(d, "1.0", payload=payload(d), pep658=True)
    return up


def sync_upstream(projects: int) -> tuple[Upstream, list[str]]:
    up = Upstream()
    names = [f"bench-proj-{i:03d}" for i in range(projects)]
    for n in names:
        for tag in TARGET_TAGS.values():
            up.add(n, "1.0", tag=tag, payload=payload(n + tag, SYNC_PAYLOAD), pep658=True)
    return up, names


def python_manifest(path: Path, index: str, requirements: list[str]) -> Path:
    reqs = "".join(f"    - {r}\n" for r in requirements)
    path.write_text(
        f"python:\n  index: {index}\n  requirements:\n{reqs}"
        f"  python: [{', '.join(repr(v) for v in TARGET_TAGS)}]\n"
        "  platforms: [manylinux_2_28_x86_64]\n"
    )
    return path


def timed(fn: Callable[[], object], before: Callable[[], object] | None = None) -> float:
    if before:
        before()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def rounds(cases: dict[str, Callable[[], float]], runs: int) -> dict[str, c.Stats]:
    out: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, case in cases.items():
            out[name].append(case())
    return {name: c.Stats(v) for name, v in out.items()}


def run_isolated(argv: list[str], timeout: float = 600) -> None:
    c.run(argv, timeout=timeout, env=clean_env())


def pip_case(tmp: Path, index: str) -> Callable[[], float]:
    venv = tmp / "pip-venv"

    def fresh() -> None:
        shutil.rmtree(venv, ignore_errors=True)
        pip_venv(venv)

    argv = [
        sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "--isolated",
        "install", "-q", "--no-cache-dir", "--index-url", index, "bench-top",
    ]  # fmt: skip
    return lambda: timed(lambda: run_isolated(argv), fresh)


def uv_case(tmp: Path, index: str) -> Callable[[], float]:
    venv, cache = tmp / "uv-venv", tmp / "uv-cache"

    def fresh() -> None:
        shutil.rmtree(venv, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
        run_isolated([uv_bin(), "venv", "-q", "--no-config", "--python", sys.executable, str(venv)])

    argv = [
        uv_bin(), "pip", "install", "-q", "--no-config", "--python", str(venv / "bin" / "python"),
        "--cache-dir", str(cache), "--index-url", index, "bench-top",
    ]  # fmt: skip
    return lambda: timed(lambda: run_isolated(argv), fresh)


def bench_install(table: c.Table, runs: int) -> None:
    with c.tmpdir("bench-pyindex-install") as tmp:
        up = install_upstream()
        origin = Origin()
        try:
            up.publish(origin)
            manifest = python_manifest(tmp / "m.yaml", f"{origin.base}/json/simple/", ["bench-top"])
            c.run([*c.WITHCACHE, "sync", "-q", "--data", str(tmp / "data"), "-m", str(manifest)])
        finally:
            origin.close()  # installs below reach only the two servers
        flat = tmp / "flat"
        up.write_flat(flat)
        ours_port, plain_port = c.free_port(), c.free_port()
        serve = [*c.WITHCACHE, "serve", "--data", str(tmp / "data")]
        plain = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1"]
        with (
            c.serving([*serve, "--listen", f"127.0.0.1:{ours_port}"], ours_port),
            c.serving([*plain, "--directory", str(flat), str(plain_port)], plain_port),
        ):
            ours = f"http://127.0.0.1:{ours_port}/simple/"
            base = f"http://127.0.0.1:{plain_port}/simple/"
            stats = rounds(
                {
                    "pip, http.server": pip_case(tmp / "a", base),
                    "pip, withcache": pip_case(tmp / "b", ours),
                    "uv, http.server": uv_case(tmp / "c", base),
                    "uv, withcache": uv_case(tmp / "d", ours),
                },
                runs,
            )
    what = f"install top + {DEPS} deps"
    table.add(f"{what}: pip, python -m http.server", stats["pip, http.server"], "s", baseline=True)
    table.add(f"{what}: pip, withcache nginx", stats["pip, withcache"], "s", paired=True)
    table.add(f"{what}: uv, python -m http.server", stats["uv, http.server"], "s", baseline=True)
    table.add(f"{what}: uv, withcache nginx", stats["uv, withcache"], "s", paired=True)


def artifacts_manifest(path: Path, base: str, up: Upstream) -> Path:
    """The same files (wheels and metadata) as plain pinned URL entries."""
    lines = ["artifacts:"]
    for d in up.dists:
        url = f"{base}/files/{d.filename}"
        lines += [f"  - url: {url}", f"    sha256: {d.sha256}"]
        meta = hashlib.sha256(d.metadata).hexdigest()
        lines += [f"  - url: {url}.metadata", f"    sha256: {meta}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def bench_sync(table: c.Table, runs: int, projects: int) -> None:
    with c.tmpdir("bench-pyindex-sync") as tmp:
        up, names = sync_upstream(projects)
        origin = Origin()
        try:
            up.publish(origin)
            py = python_manifest(tmp / "python.yaml", f"{origin.base}/json/simple/", names)
            urls = artifacts_manifest(tmp / "urls.yaml", origin.base, up)

            def sync(name: str, manifest: Path, cold: bool) -> Callable[[], float]:
                data = tmp / name
                argv = [*c.WITHCACHE, "sync", "-q", "-j", "8", "--data", str(data)]
                argv += ["-m", str(manifest)]
                wipe = (lambda: shutil.rmtree(data, ignore_errors=True)) if cold else None
                return lambda: timed(lambda: c.run(argv, timeout=600), wipe)

            stats = rounds(
                {
                    "urls cold": sync("urls", urls, cold=True),
                    "python cold": sync("python", py, cold=True),
                    "urls warm": sync("urls", urls, cold=False),
                    "python warm": sync("python", py, cold=False),
                },
                runs,
            )
            pages = sum(1 for _ in (tmp / "python" / "www" / "simple").glob("*/index.html"))
            assert pages == projects, pages
        finally:
            origin.close()
    n = projects * len(TARGET_TAGS)
    what = f"{n}-file index"
    note = f"{n} wheels + {n} metadata files"
    table.add(f"{what}: same files as artifacts:, empty", stats["urls cold"], "s", baseline=True)
    table.add(
        f"{what}: python: section, empty",
        stats["python cold"],
        "s",
        paired=True,
        note=f"{note}; + resolve, pages, render",
    )
    table.add(f"{what}: same files as artifacts:, no-op", stats["urls warm"], "s", baseline=True)
    table.add(
        f"{what}: python: section, no-op",
        stats["python warm"],
        "s",
        paired=True,
        note="resolve + read pages + plan + render; nothing fetched",
    )


def main() -> int:
    args = c.parse_args("pyindex")
    runs = args.runs or (2 if args.quick else 5)
    table = c.Table("pyindex", args.json)
    if not c.have("nginx"):
        table.skip("install", "nginx is not installed")
    else:
        bench_install(table, runs)
    bench_sync(table, runs, SYNC_PROJECTS // 4 if args.quick else SYNC_PROJECTS)
    return table.finish()


if __name__ == "__main__":
    sys.exit(main())
