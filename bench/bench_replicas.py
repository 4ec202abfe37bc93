#!/usr/bin/env python3
"""replicas: an edge cache against the center it fronts, and replicate of an unchanged tree.

- Edge hit vs center hit, same files: a 1 GiB GET (curl, MB/s), 4 KiB GETs (wrk,
  req/s), 4 KiB HEAD probes (ab -k -i, req/s). The center is `withcache serve`, the
  edge `withcache serve --edge` in front of it, warmed first. Target >= 0.9x.
- The herd: 100 curl processes at once for a 200 MB file through a cold edge (fresh
  cache each round), against the same 100 through the warm edge. Target: cold within
  1.5x of warm (ratio >= 0.667), and one upstream GET per slice in the center's log.
- `withcache replicate` of an unchanged 10,000-file tree to a local replica: the whole
  command (Python start, one rsync --dry-run), against a bare no-op `rsync -rt
  --delete` of the same tree. Target <= 2 s.
Rounds interleave the compared cases. --quick: fewer rounds, shorter loads, one herd.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

import common as c
from bench_serve import ab_head_rps, curl_rate, interleaved, wrk_rps

SLICE = 8 * c.MiB
HERD = 100
HERD_SIZE = 200 * c.MiB
TREE_FILES = 10_000


def herd(url: str, size: int, n: int = HERD) -> float:
    """Seconds until `n` curl processes started together have each fetched `url` whole."""
    argv = ["curl", "-sSf", "-o", "/dev/null", "-w", "%{size_download}", url]
    t0 = time.perf_counter()
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) for _ in range(n)]
    sizes = [p.communicate(timeout=300)[0] for p in procs]
    dt = time.perf_counter() - t0
    bad = [s for p, s in zip(procs, sizes, strict=True) if p.returncode or int(s or 0) != size]
    if bad:
        raise RuntimeError(f"{len(bad)} of {n} herd clients failed on {url}")
    return dt


def plant_blob(www: Path, url: str, size: int, seed: int) -> str:
    """Write a blob straight into a tree (the bench measures serving, not placing)."""
    from withcache import keys

    key = keys.normalize(url)
    c.make_file(www / keys.blob_relpath(key), size, seed=seed)
    return keys.cache_path(key)


def build_tree(data: Path, files: int) -> None:
    """A tree shaped like a real one: 90% blobs in token dirs, the rest Python pages."""
    from withcache import keys

    www = data / "www"
    projects = files // 20
    blobs = files - 2 * projects - 2
    for i in range(blobs):
        p = www / keys.blob_relpath(keys.normalize(f"https://vendor.example/pkg/file-{i}.tar.gz"))
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x" * (100 + i % 900))
    for i in range(projects):
        d = www / "simple" / f"project-{i}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "index.html").write_text(f"<a href='/b/x/p{i}.whl'>p{i}</a>\n")
        (d / "index.v1json").write_text(json.dumps({"name": f"project-{i}", "files": []}))
    (www / "index.html").write_text("<html></html>\n")
    (www / "catalog.json").write_text('{"artifacts": []}\n')
    for p in www.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)


def upstream_gets(log: Path, path: str, since: int) -> int:
    lines = log.read_text().splitlines()[since:]
    return sum(1 for line in lines if json.loads(line)["uri"] == path)


def main() -> int:
    args = c.parse_args("replicas")
    runs = args.runs or (3 if args.quick else 5)
    load_s = 1 if args.quick else 2
    herds = 1 if args.quick else 2
    table = c.Table("replicas", args.json)
    if not c.have("nginx") or not c.have("curl"):
        table.skip("edge cases", "needs nginx and curl")
        return table.finish()

    with c.tmpdir("bench-replicas") as tmp, ExitStack() as stack:
        data = tmp / "center"
        c.log("writing the center's files (1 GiB, 200 MB, 4 KiB)")
        big = plant_blob(data / "www", "https://vendor.example/big.run", c.GiB, 1)
        herd_path = plant_blob(data / "www", "https://vendor.example/herd.run", HERD_SIZE, 2)
        small = plant_blob(data / "www", "https://vendor.example/small.bin", 4096, 3)
        cport = c.free_port()
        center = f"http://127.0.0.1:{cport}"
        argv = [*c.WITHCACHE, "serve", "--data", str(data), "--listen", f"127.0.0.1:{cport}"]
        stack.enter_context(c.serving(argv, cport))

        def edge_argv(edge_dir: Path, port: int) -> list[str]:
            return [
                *c.WITHCACHE, "serve", "--edge", center, "--data", str(edge_dir),
                "--listen", f"127.0.0.1:{port}", "--min-free", "100m",
            ]  # fmt: skip

        eport = c.free_port()
        edge = f"http://127.0.0.1:{eport}"
        stack.enter_context(c.serving(edge_argv(tmp / "edge", eport), eport))
        for path, size in ((big, c.GiB), (small, 4096)):
            curl_rate(edge + path, size)  # warm: the edge holds both from here on

        c.log(f"1 GiB GET x{runs}")
        stats = interleaved(
            lambda u: curl_rate(u, c.GiB), {"center": center + big, "edge": edge + big}, runs
        )
        table.add("1 GiB GET (curl), center", stats["center"], "MB/s", baseline=True)
        table.add("1 GiB GET (curl), edge hit", stats["edge"], "MB/s", target=0.9, paired=True)
        for title, tool, fn in (
            ("4 KiB GET (wrk)", "wrk", wrk_rps),
            ("4 KiB HEAD (ab -k -i)", "ab", ab_head_rps),
        ):
            if not c.have(tool):
                table.skip(f"{title}, edge hit", f"{tool} is not installed")
                continue
            c.log(f"{title} x{runs}, {load_s}s each")
            urls = {"center": center + small, "edge": edge + small}
            stats = interleaved(lambda u, fn=fn: fn(u, load_s), urls, runs)
            table.add(f"{title}, center", stats["center"], "req/s", baseline=True)
            table.add(f"{title}, edge hit", stats["edge"], "req/s", target=0.9, paired=True)

        c.log(f"herd: {HERD} clients x {HERD_SIZE >> 20} MB, cold and warm edge, x{herds}")
        log = data / "log" / "access.log"
        cold, warm, fetches = [], [], []
        for i in range(herds):
            herd_dir = tmp / f"herd-{i}"
            port = c.free_port()
            with c.serving(edge_argv(herd_dir, port), port):
                url = f"http://127.0.0.1:{port}{herd_path}"
                since = len(log.read_text().splitlines())
                c.settle()
                cold.append(herd(url, HERD_SIZE))
                fetches.append(upstream_gets(log, herd_path, since))
                c.settle()
                warm.append(herd(url, HERD_SIZE))
            shutil.rmtree(herd_dir, ignore_errors=True)
        slices = math.ceil(HERD_SIZE / SLICE)
        note = f"center saw {'/'.join(map(str, fetches))} GETs per cold herd ({slices} slices)"
        if any(f != slices for f in fetches):
            note += ": MORE THAN ONE PER SLICE"
        table.add(f"{HERD} clients x 200 MB, warm edge", c.Stats(warm), "s", baseline=True)
        table.add(
            f"{HERD} clients x 200 MB, cold edge",
            c.Stats(cold),
            "s",
            target=round(1 / 1.5, 3),
            paired=True,
            note=note,
        )

    if not c.have("rsync"):
        table.skip("replicate, unchanged tree", "rsync is not installed")
        return table.finish()
    with c.tmpdir("bench-replicate") as tmp:
        c.log(f"replicate: building a {TREE_FILES}-file tree")
        data, replica = tmp / "center", tmp / "replica"
        build_tree(data, TREE_FILES)
        count = sum(1 for p in (data / "www").rglob("*") if p.is_file())
        c.run([*c.WITHCACHE, "replicate", "-q", "--data", str(data), str(replica)], timeout=300)
        rsync = ["rsync", "-rt", "--delete", f"{data}/www/", f"{replica}/www/"]
        ours = [*c.WITHCACHE, "replicate", "-q", "--data", str(data), str(replica)]
        base, mine = [], []
        for _ in range(runs):
            base.append(c.time_cmd(rsync, 1).samples[0])
            mine.append(c.time_cmd(ours, 1).samples[0])
        table.add(f"no-op rsync -rt --delete, {count} files", c.Stats(base), "s", baseline=True)
        table.add(
            f"withcache replicate, unchanged {count} files",
            c.Stats(mine),
            "s",
            limit=2.0,
            paired=True,
            note="the whole command: Python start, one rsync --dry-run",
        )
    return table.finish()


if __name__ == "__main__":
    raise SystemExit(main())
