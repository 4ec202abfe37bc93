#!/usr/bin/env python3
"""upload: the private indexes' write path (issue 13).

1. A 500 MB wheel uploaded with `curl -F` (the upload API's multipart form) through
   `withcache serve` (nginx auth_basic, the gunicorn upload service: stream to
   state/partial/, sha256, fsync, zip check, placement, pages), against `curl -T` of
   the same bytes to a plain nginx WebDAV PUT location (nginx's own ceiling for
   receiving a file: a temp file, a rename, no fsync). Target >= 0.5x. Also against
   `dd conv=fsync` of the same bytes: the disk's durable write speed, which bounds an
   upload (its bytes are fsynced before they are placed) but not the WebDAV PUT.
2. An index of 10,000 files (1,000 projects): one more upload, then `uv pip install`
   of it, timed from the upload's response (bound: 1 s); baseline: the same install
   of a package that was there before. Incremental republishing: the upload into
   the 10,000-file index against the same upload into an empty index (ratio ~1 means
   the index's size costs nothing), and one project's pages against every page.

Rounds are interleaved (baseline, case, baseline, case ...) and the ratios paired.
--quick: 30 MB, 2 rounds, 300 files (a smoke test; the full run has the figures).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import common as c

from withcache import keys, store
from withcache.indexes import db, model, pages
from withcache.layout import Layout

USER, PASSWORD = "ci", "bench-secret"
MANIFEST = "indexes:\n  team:\n    read: [ci]\n    write: [ci]\n  empty:\n    write: [ci]\n"


def wheel_around(payload: Path, dest: Path, version: str) -> Path:
    """A valid wheel whose bulk is `payload`, stored (the bytes stay incompressible)."""
    info = f"big-{version}.dist-info"
    path = dest / f"big-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("big.py", "X = 1\n")
        z.write(payload, "big_payload.bin")
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: big\nVersion: {version}\n")
        z.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        z.writestr(f"{info}/RECORD", "")
    return path


def small_wheel(dest: Path, name: str, version: str) -> Path:
    sys.path.insert(0, str(c.REPO))
    from tests.pyindex_upstream import build_wheel

    fn, body, _ = build_wheel(name, version)
    p = dest / fn
    p.write_bytes(body)
    return p


def curl_form(url: str, path: Path, name: str, version: str) -> None:
    c.run(
        [
            "curl", "-sS", "--fail-with-body", "-o", "/dev/null", "-u", f"{USER}:{PASSWORD}",
            "-F", ":action=file_upload", "-F", "protocol_version=1", "-F", f"name={name}",
            "-F", f"version={version}", "-F", "filetype=bdist_wheel",
            "-F", f"content=@{path};type=application/octet-stream", url,
        ],
        timeout=600,
    )  # fmt: skip


def dav_conf(root: Path, port: int, run_dir: Path) -> Path:
    """Plain nginx with a WebDAV PUT location: the baseline for receiving a file."""
    conf = c.minimal_nginx_conf(root, port, run_dir)
    text = conf.read_text().replace(
        "        root " + str(root) + ";",
        f"        root {root};\n"
        "        location /dav/ {\n"
        "            dav_methods PUT;\n"
        "            create_full_put_path on;\n"
        "            client_max_body_size 2g;\n"
        "        }",
    )
    conf.write_text(text)
    return conf


def start_serve(data: Path, manifests: Path, port: int) -> subprocess.Popen[bytes]:
    c.run([*c.WITHCACHE, "sync", "--data", str(data), "-m", str(manifests), "-q"])
    c.run(
        [*c.WITHCACHE, "users", "add", USER, "--cost", "6", "--data", str(data)],
        input=PASSWORD + "\n",
    )
    proc = subprocess.Popen(
        [*c.WITHCACHE, "serve", "--data", str(data), "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    c.wait_port(port, 30, proc=proc)
    deadline = time.monotonic() + 30
    while not (data / "run" / "upload.sock").exists():
        if time.monotonic() > deadline:
            raise RuntimeError("the upload service did not start")
        time.sleep(0.05)
    return proc


def seed(layout: Layout, index: str, files: int, projects: int) -> None:
    """An index of `files` small wheels over `projects` projects, written directly (a
    fixture, not the code under test: placement's fsyncs would take minutes here),
    then every page rendered by pages.publish_all."""
    ix = model.load(layout)[index]
    sys.path.insert(0, str(c.REPO))
    from tests.pyindex_upstream import build_wheel

    now = time.time()
    rows, records = [], []
    for i in range(files):
        project, version = f"proj{i % projects:04d}", f"1.{i // projects}"
        fn, body, _ = build_wheel(project, version)
        sha = hashlib.sha256(body).hexdigest()
        key = ix.key(sha, fn)
        blob = layout.www / keys.blob_relpath(key)
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(body)
        records.append(store.Artifact(key, key, fn, len(body), sha, now, source=model.SOURCE))
        rows.append(
            db.IndexedFile(index, fn, project, version, key, sha, len(body), None, None, None,
                           None, now, "seed")
        )  # fmt: skip
    conn = store.connect(layout.db)
    try:
        store.put_artifacts(conn, records)
        with store.transaction(conn):
            conn.executemany(
                "INSERT INTO index_files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [tuple(r.__dict__.values()) for r in rows],
            )
        pages.publish_all(layout, conn, ix)
    finally:
        conn.close()


def uv_install(index_url: str, venv: Path, cache: Path, requirement: str) -> None:
    from uv import find_uv_bin

    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "PIP_"))}
    shutil.rmtree(venv, ignore_errors=True)
    c.run(
        [find_uv_bin(), "venv", "--no-config", "-q", "--python", sys.executable, str(venv)], env=env
    )
    c.run(
        [
            find_uv_bin(), "pip", "install", "--no-config", "-q",
            "--python", str(venv / "bin/python"), "--cache-dir", str(cache),
            "--index-url", index_url, requirement,
        ],
        env=env,
    )  # fmt: skip


def main() -> int:
    args = c.parse_args("upload")
    quick = args.quick
    size = (30 if quick else 500) * 1_000_000
    runs = 2 if quick else (args.runs or 3)  # 500 MB rounds: 3, as the 1 GiB cases elsewhere
    files, projects = (300, 30) if quick else (10_000, 1_000)
    table = c.Table("upload", args.json)
    if not c.have("curl"):
        table.skip("500 MB upload", "curl is not installed")
        return table.finish()
    with c.tmpdir("bench-upload") as d:
        payload = d / "payload.bin"
        c.make_file(payload, size)
        dav_root, dav_run = d / "davroot", d / "davrun"
        (dav_root / "dav").mkdir(parents=True)
        (dav_root / "dav").chmod(0o777)  # nginx's workers (nobody when run as root) write here
        dav_port, port = c.free_port(), c.free_port()
        manifests = d / "manifests"
        manifests.mkdir()
        (manifests / "indexes.yaml").write_text(MANIFEST)
        data = d / "data"
        lay = Layout(data)
        serve = start_serve(data, manifests, port)
        try:
            with c.nginx_running(dav_conf(dav_root, dav_port, dav_run), dav_run, dav_port):
                dav_s, ours_s, disk_s = [], [], []
                for i in range(runs):
                    whl = wheel_around(payload, d, f"1.{i}")
                    c.settle()
                    t0 = time.perf_counter()
                    c.run(
                        [
                            "curl",
                            "-sS",
                            "-f",
                            "-T",
                            str(whl),
                            f"http://127.0.0.1:{dav_port}/dav/{whl.name}",
                        ],
                        timeout=600,
                    )
                    dav_s.append(size / 1e6 / (time.perf_counter() - t0))
                    (dav_root / "dav" / whl.name).unlink()
                    c.settle()
                    t0 = time.perf_counter()  # the disk's durable speed: what an upload pays
                    c.run(["dd", f"if={whl}", f"of={d / 'durable'}", "bs=1M", "conv=fsync"])
                    disk_s.append(size / 1e6 / (time.perf_counter() - t0))
                    (d / "durable").unlink()
                    c.settle()
                    t0 = time.perf_counter()
                    curl_form(f"http://127.0.0.1:{port}/team/", whl, "big", f"1.{i}")
                    ours_s.append(size / 1e6 / (time.perf_counter() - t0))
                    whl.unlink()
                    c.log(
                        f"round {i + 1}: dav {dav_s[-1]:.0f} MB/s, dd+fsync {disk_s[-1]:.0f} "
                        f"MB/s, upload {ours_s[-1]:.0f} MB/s"
                    )
            mb = size // 1_000_000
            table.add(
                f"{mb} MB PUT, plain nginx WebDAV (curl -T)", c.Stats(dav_s), "MB/s", baseline=True
            )
            table.add(
                f"{mb} MB wheel upload, nginx + upload service (curl -F)", c.Stats(ours_s), "MB/s",
                target=0.5, paired=True,
                note="streamed to a partial file (fsynced), sha256, zip check, place, pages",
            )  # fmt: skip
            table.add(
                f"{mb} MB written and fsynced (dd conv=fsync): the disk's durable speed",
                c.Stats(disk_s), "MB/s", baseline=True,
                note="the WebDAV PUT never waits for the disk; an upload must",
            )  # fmt: skip
            table.add(
                f"{mb} MB wheel upload against the disk's durable speed", c.Stats(ours_s), "MB/s",
                paired=True,
            )  # fmt: skip

            t0 = time.perf_counter()
            seed(lay, "team", files, projects)
            c.log(f"seeded {files} files in {time.perf_counter() - t0:.1f}s")
            index_url = f"http://{USER}:{PASSWORD}@127.0.0.1:{port}/team/simple/"
            _base_s, empty_s, full_s, install_s, old_s = [], [], [], [], []
            for i in range(runs):
                for target, out in (("empty", empty_s), ("team", full_s)):
                    w = small_wheel(d, "fresh" if target == "team" else "other", f"2.{i}")
                    c.settle()
                    t0 = time.perf_counter()
                    curl_form(
                        f"http://127.0.0.1:{port}/{target}/", w, w.name.split("-")[0], f"2.{i}"
                    )
                    out.append(time.perf_counter() - t0)
                    w.unlink()
                t0 = time.perf_counter()
                uv_install(index_url, d / "venv", d / f"uvc{i}", f"fresh==2.{i}")
                install_s.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                uv_install(index_url, d / "venv", d / f"uvd{i}", f"proj{i:04d}==1.0")
                old_s.append(time.perf_counter() - t0)
            ix = model.load(lay)["team"]
            conn = store.connect(lay.db)
            try:
                full = c.time_runs(lambda: pages.publish_all(lay, conn, ix), runs)
                one = c.time_runs(lambda: _republish_one(lay, conn, ix), runs)
            finally:
                conn.close()
        finally:
            c.stop(serve)
    n = f"{files:,} files"
    table.add("small upload into an empty index", c.Stats(empty_s), "s", baseline=True)
    table.add(f"small upload into an index of {n}", c.Stats(full_s), "s", paired=True,
              note="republishes one project and the root")  # fmt: skip
    table.add(
        f"uv install of a package already in the {n} index", c.Stats(old_s), "s", baseline=True
    )
    table.add(
        "uv install of the package just uploaded, from its response", c.Stats(install_s), "s",
        paired=True, limit=1.0, note="fresh venv, empty uv cache",
    )  # fmt: skip
    table.add(f"republish every page of {n} (sync)", full, "s", baseline=True)
    table.add("republish one project and the root (an upload)", one, "s", note="incremental")
    return table.finish()


def _republish_one(lay: Layout, conn: object, ix: model.Index) -> None:
    with pages.publishing(lay, ix.name):
        pages.republish(lay, conn, ix, {"proj0001"})  # type: ignore[arg-type]


if __name__ == "__main__":
    raise SystemExit(main())
