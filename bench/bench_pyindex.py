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
    sync` into an empty data dir (resolve with uv, read 100 project pages, fetch 400 files,
    render) and again with everything present (the no-op a cron job pays), vs
    `pip download` of the same wheels for the same two targets (the baseline: what an
    operator would otherwise script).
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import tempfile
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


def sync_upstream() -> tuple[Upstream, list[str]]:
    up = Upstream()
    names = [f"bench-proj-{i:03d}" for i in range(SYNC_PROJECTS)]
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


def bench_sync(table: c.Table, runs: int) -> None:
    with c.tmpdir("bench-pyindex-sync") as tmp:
        up, names = sync_upstream()
        origin = Origin()
        try:
            up.publish(origin)
            index = f"{origin.base}/json/simple/"
            manifest = python_manifest(tmp / "m.yaml", index, names)
            data = tmp / "data"
            reqs = tmp / "requirements.txt"
            reqs.write_text("".join(n + "\n" for n in names))
            sync = [*c.WITHCACHE, "sync", "-q", "-j", "8", "--data", str(data), "-m", str(manifest)]

            def pip_download() -> None:
                dest = Path(tempfile.mkdtemp(dir=tmp))
                for version in TARGET_TAGS:
                    run_isolated(
                        [
                            sys.executable, "-m", "pip", "--isolated", "download", "-q",
                            "--no-cache-dir", "--only-binary", ":all:", "--no-deps",
                            "--python-version", version, "--platform", "manylinux_2_28_x86_64",
                            "--index-url", index, "-d", str(dest), "-r", str(reqs),
                        ]
                    )  # fmt: skip
                shutil.rmtree(dest)

            def cold() -> float:
                return timed(lambda: c.run(sync, timeout=600), lambda: shutil.rmtree(data, True))

            def warm() -> float:
                return timed(lambda: c.run(sync, timeout=600))

            stats = rounds(
                {"pip download": lambda: timed(pip_download), "cold": cold, "warm": warm}, runs
            )
            files = sum(1 for _ in (data / "www" / "simple").glob("*/index.html"))
            assert files == SYNC_PROJECTS, files
        finally:
            origin.close()
    n = SYNC_PROJECTS * len(TARGET_TAGS)
    table.add(
        f"{n} wheels, 2 targets: pip download --no-deps", stats["pip download"], "s", baseline=True
    )
    note = f"{n} files + {n} metadata, resolve + fetch + render"
    table.add(f"{n}-file index: withcache sync, empty data dir", stats["cold"], "s", note=note)
    note = "resolve + plan + render, nothing to fetch"
    table.add(f"{n}-file index: withcache sync, all present", stats["warm"], "s", note=note)


def main() -> int:
    args = c.parse_args("pyindex")
    runs = args.runs or 5
    table = c.Table("pyindex", args.json)
    if not c.have("nginx"):
        table.skip("install", "nginx is not installed")
    else:
        bench_install(table, runs)
    bench_sync(table, runs)
    return table.finish()


if __name__ == "__main__":
    sys.exit(main())
