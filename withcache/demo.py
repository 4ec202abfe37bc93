"""`make demo`: the whole cache on this machine, offline, in one command.

A loopback origin serves generated "vendor" files; the demo manifest is synced
into ./demo-data; nginx serves it; the watcher follows nginx's log; curl through
the shim fetches one cached artifact (a hit) and one uncached file (a miss, which
then shows up in `withcache misses`). Everything started here stops on Ctrl-C.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import io
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import requests

from withcache import keys
from withcache.children import running
from withcache.origin import Origin

ORIGIN_PORT = 18765
DEMO_MANIFEST = Path(__file__).resolve().parent.parent / "manifests" / "demo" / "demo.yaml"

# path -> (seed, size): deterministic bytes, so the demo manifest can pin a sha256
FILES = {
    "/vendor/cuda/cuda_demo_12.6.3_linux.run": ("cuda", 8 << 20),
    "/vendor/rocm/amdgpu-install_demo_6.2_all.deb": ("rocm", 3 << 20),
    "/vendor/firmware/fw-demo-22.41.1000.bin": ("fw-demo", 1 << 20),
    "/vendor/drivers/nvidia-demo-560.35.05.tar.gz": ("driver", 2 << 20),
    "/vendor/tools/not-in-any-manifest-1.0.tar.gz": ("uncached", 256 << 10),
    "/mirror/dist/demo-tool-2.1.tar.gz": ("mirror", 512 << 10),
}
MIRROR_PATH = "/m/demo/dist/demo-tool-2.1.tar.gz"
USER, PASSWORD = "demo", "demo-password"  # the private index's reader and writer
UNCACHED = "/vendor/tools/not-in-any-manifest-1.0.tar.gz"


def say(text: str = "") -> None:
    print(text, flush=True)


def withcache(*args: str) -> list[str]:
    return [sys.executable, "-m", "withcache", *args]


def shim_dir() -> Path | None:
    here = Path(__file__).resolve().parent
    for d in (here / "_shims", here.parent / "shims"):
        if (d / "curlwithcache").exists():
            return d
    return None


def start_origin() -> Origin:
    try:
        origin = Origin(port=ORIGIN_PORT)
    except OSError as exc:
        raise SystemExit(
            f"demo: cannot listen on 127.0.0.1:{ORIGIN_PORT} ({exc.strerror}); "
            "is another demo running?"
        ) from exc
    for path, (seed, size) in FILES.items():
        origin.add(path, random.Random(seed).randbytes(size))
    return origin


def wait_healthy(url: str, proc: subprocess.Popen[bytes], seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"demo: nginx exited with status {proc.returncode}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(url + "/healthz", timeout=1).ok:
                return
        time.sleep(0.1)
    raise SystemExit("demo: nginx did not come up within 15 s")


def curl_through_shim(cache_url: str, origin_url: str, out: Path) -> tuple[int, str]:
    """Fetch like an unchanged script would, with the shim standing in for curl."""
    shims = shim_dir()
    env = dict(os.environ, WITHCACHE_SERVER=cache_url)
    if shims is not None:
        cmd = ["sh", str(shims / "curlwithcache"), "-fsS", "-o", str(out), origin_url]
    else:  # no shim in this install: ask the cache directly
        cmd = [
            "curl",
            "-fsS",
            "-o",
            str(out),
            cache_url + keys.cache_path(keys.normalize(origin_url)),
        ]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    return r.returncode, r.stderr.strip()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="withcache-demo", description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("demo-data"), help="data dir (./demo-data)")
    p.add_argument("--listen", default="127.0.0.1:18080", help="cache address (127.0.0.1:18080)")
    p.add_argument("--no-wait", action="store_true", help="stop right after the walk-through")
    args = p.parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _stop_like_ctrl_c)
    try:
        return _run(args)
    except KeyboardInterrupt:  # before the walk-through ended; everything started is stopped
        say("\ninterrupted: nginx, the watcher and the origin are stopped")
        return 130


def _stop_like_ctrl_c(signum: int, frame: object) -> None:
    """SIGTERM and SIGHUP (`timeout`, `kill`, a closed terminal) stop the demo as Ctrl-C
    does: on the way out it stops the nginx, watcher and upload service it started,
    which would otherwise go on holding the port."""
    raise KeyboardInterrupt


def _run(args: argparse.Namespace) -> int:
    data = args.data.resolve()
    cache_url = f"http://{args.listen}"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))

    origin = start_origin()
    try:
        say(f"1. origin: a loopback 'vendor' server at {origin.base} ({len(FILES)} files)")
        say(f"2. sync: {DEMO_MANIFEST.name} -> {data}")
        r = subprocess.run(
            withcache("sync", "--data", str(data), "-m", str(DEMO_MANIFEST)), env=env
        )
        if r.returncode != 0:
            return r.returncode
        subprocess.run(
            withcache("users", "add", USER, "--data", str(data)),
            input=PASSWORD + "\n",
            text=True,
            env=env,
            check=True,
            capture_output=True,
        )
        with running(
            withcache(
                "serve", "--data", str(data), "--listen", args.listen, "-m", str(DEMO_MANIFEST)
            ),
            env=env,
            stderr=subprocess.DEVNULL,
        ) as nginx:
            wait_healthy(cache_url, nginx)
            say(f"3. nginx: serving {data / 'www'} at {cache_url}")
            watch = withcache("watch", "--data", str(data), "--metrics-every", "0.5")
            with running(watch, env=env) as watcher:
                time.sleep(0.5)
                say(f"4. watcher: following {data / 'log' / 'access.log'} (pid {watcher.pid})")
                walk_through(origin, cache_url, data, env)
                if args.no_wait:
                    return 0
                say("\nRunning until Ctrl-C.")
                with contextlib.suppress(KeyboardInterrupt):
                    signal.pause()
                say("\nstopping nginx, the watcher and the origin")
    finally:
        origin.close()
    return 0


def walk_through(origin: Origin, cache_url: str, data: Path, env: dict[str, str]) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="withcache-demo-"))
    try:
        hit_url = origin.base + "/vendor/cuda/cuda_demo_12.6.3_linux.run"
        before = len(origin.requests)
        status, err = curl_through_shim(cache_url, hit_url, tmp / "cuda.run")
        asked = len(origin.requests) - before
        say(f"5. hit:  curl {hit_url}")
        say(
            f"         exit {status}, {(tmp / 'cuda.run').stat().st_size} bytes, "
            f"origin asked {asked} times (0 = served by the cache) {err}"
        )
        miss_url = origin.base + UNCACHED
        before = len(origin.requests)
        status, err = curl_through_shim(cache_url, miss_url, tmp / "tool.tgz")
        asked = len(origin.requests) - before
        say(f"6. miss: curl {miss_url}")
        say(f"         exit {status}, fetched from the origin ({asked} request) {err}")
        time.sleep(1.5)  # the watcher records the miss within a second or so
        misses = subprocess.run(
            withcache("misses", "--data", str(data)), env=env, capture_output=True, text=True
        )
        say("7. withcache misses:")
        say("   " + (misses.stdout.strip() or misses.stderr.strip()).replace("\n", "\n   "))
        mirror_and_private_index(cache_url)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    say()
    say("Open:")
    say(f"  {cache_url}/               the index (hits, misses)")
    say(f"  {cache_url}/catalog.json   the machine-readable catalog")
    say(f"  {cache_url}/metrics        Prometheus metrics")
    say(f"  {cache_url}{MIRROR_PATH}")
    say(f"  {cache_url}{keys.cache_path(keys.normalize(hit_url))}")
    say("Try:")
    say(f"  WITHCACHE_SERVER={cache_url} sh shims/curlwithcache -O {hit_url}")
    say(f"  python -m withcache misses --data {data}")


def mirror_and_private_index(cache_url: str) -> None:
    """Steps 8-10: a path mirror, a private index that takes an upload, the metrics."""
    r = requests.get(cache_url + MIRROR_PATH, timeout=10)
    say(f"8. mirror: GET {MIRROR_PATH}")
    say(f"         HTTP {r.status_code}, {len(r.content)} bytes (synced from the second source)")
    name, body = demo_wheel()
    fields = {
        ":action": "file_upload",
        "protocol_version": "1",
        "name": "demo-hello",
        "version": "1.0",
        "filetype": "bdist_wheel",
        "pyversion": "py3",
        "sha256_digest": hashlib.sha256(body).hexdigest(),
    }
    up = requests.post(
        cache_url + "/team/",
        data=fields,
        files={"content": (name, body)},
        auth=(USER, PASSWORD),
        timeout=60,
    )
    say(f"9. upload: POST {name} to {cache_url}/team/ (what twine upload does)")
    say(f"         HTTP {up.status_code}: {up.text.strip()}")
    page = cache_url + "/team/simple/demo-hello/"
    anonymous = requests.get(page, timeout=10).status_code
    listed = name in requests.get(page, auth=(USER, PASSWORD), timeout=10).text
    say(f"         {page}: {anonymous} without a password, lists the wheel with it: {listed}")
    say(
        f"         pip install --index-url http://{USER}:{PASSWORD}@{cache_url[7:]}/team/simple/"
        " demo-hello"
    )
    time.sleep(1.5)  # the watcher writes the metrics after its next commit
    lines = requests.get(cache_url + "/metrics", timeout=10).text.splitlines()
    say("10. metrics: GET /metrics (Prometheus)")
    for line in lines:
        if line.startswith(("withcache_hits_total", "withcache_misses_total")):
            say(f"         {line}")


def demo_wheel() -> tuple[str, bytes]:
    """A minimal valid wheel (METADATA, WHEEL, RECORD), built in memory."""
    info = "demo_hello-1.0.dist-info"
    files = {
        "demo_hello/__init__.py": b'GREETING = "hello from the private index"\n',
        f"{info}/METADATA": b"Metadata-Version: 2.1\nName: demo-hello\nVersion: 1.0\n",
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: withcache-demo\n"
        b"Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(
        f"{path},sha256="
        f"{base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode().rstrip('=')},"
        f"{len(data)}\n"
        for path, data in files.items()
    )
    files[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for path, data in files.items():
            z.writestr(zipfile.ZipInfo(path, (2026, 1, 1, 0, 0, 0)), data)
    return "demo_hello-1.0-py3-none-any.whl", buf.getvalue()


if __name__ == "__main__":
    raise SystemExit(main())
