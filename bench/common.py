"""Shared helpers for the bench/bench_*.py scripts.

Every figure a bench prints is a ratio against a baseline measured in the same run,
so a noisy machine moves both sides together. The API, in the order a bench uses it:

    args = parse_args("serve")           # --quick, --runs N, --json PATH (args.json is set)
    stats = time_runs(fn, runs=5)        # time fn() `runs` times -> Stats (seconds)
    stats = sample_runs(fn, runs=5)      # fn() returns a number (req/s, MB/s) -> Stats
    stats = time_cmd(["curl", ...], runs=5, timeout=60)   # a command, checked, timed
    Stats.median / .min / .max / .samples

    with tmpdir("bench-serve") as d: ...          # world-readable dir under /tmp, removed
    make_file(path, size)                          # fast, incompressible, deterministic
    settle()                                       # os.sync(): no writeback left to pay for
    with static_origin(root) as base: ...         # nginx serving root: base = "http://127.0.0.1:P"
    with file_origin(root) as base: ...           # same, pure Python (sendfile), no nginx
    with nginx_running(conf, prefix, port): ...   # start/stop any nginx config
    with serving(argv, port): ...                 # start/stop any server process
    run([*WITHCACHE, "sync", ...])                 # the checkout's CLI (PYTHONPATH is set)
    cache_path(url)                                # "/b/<token>/<name>" for an origin URL
    conf = minimal_nginx_conf(root, port, run_dir)  # nginx's ceiling: plain static serving

    venv, why = ensure_peer()                     # the PyPI withcache 0.13.3 (or why not)
    with peer_server(venv, data_dir) as peer:     # its withcache-server on loopback
        seconds = peer.fill(url, "name")          # seed through its API, wait until served
        peer.blob_url(url)                        # where it serves that URL

    table = Table("serve")
    table.add("1 GiB GET, minimal nginx", stats, "MB/s", baseline=True)
    table.add("1 GiB GET, withcache nginx", stats2, "MB/s", target=0.95)
    table.skip("1 GiB GET, withcache-server 0.13.3", "peer not installed")
    table.finish()       # prints the table, writes bench/results/serve.json

Ratios: `ratio` is how many times *better* than the row's baseline a case is, whatever
the unit: baseline_time / time for seconds, value / baseline_value for rates. So > 1 is
faster than the baseline, < 1 slower; a `target` is a minimum ratio, a `limit` an absolute
bound on the median (add(..., limit=1.0) with unit "s": at most 1 s). With paired=True
(the cases ran interleaved, round by round) the ratio is the median of the per-round
ratios, which cancels the drift of a noisy machine between rounds.

Every process started here is stopped in a `finally`; every command has a timeout.
"""

from __future__ import annotations

import argparse
import base64
import compileall
import contextlib
import hashlib
import http.server
import json
import os
import platform
import shutil
import signal
import socket
import socketserver
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from withcache import store

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
MiB = 1 << 20
GiB = 1 << 30

# Units where a smaller number is better; every other unit is a rate (bigger is better).
TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}

# The checkout's withcache, importable from the benches and from their subprocesses
# (`python3 -m withcache`) without installing it.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
)
WITHCACHE = [sys.executable, "-m", "withcache"]
# Bytecode, as an installed withcache has it (pip compiles a wheel's modules when it
# installs them). Without it, a checkout run with PYTHONDONTWRITEBYTECODE set would
# compile every module again at each start of a timed command, which no operator pays.
compileall.compile_dir(REPO / "withcache", quiet=1)


def cache_path(url: str) -> str:
    """/b/<token>/<name> for an origin URL, as our nginx serves it."""
    from withcache import keys

    return keys.cache_path(keys.normalize(url))


def seed_records(
    db: Path, artifacts: Sequence[store.Artifact], hits: Sequence[tuple[str, int, int, float]] = ()
) -> None:
    """Write artifact records (store.Artifact) and hit rows (key, count, bytes, last)
    straight into a state DB: benches seed thousands in seconds, where syncing them
    would take minutes."""
    from withcache import store

    conn = store.connect(db)
    try:
        store.put_artifacts(conn, artifacts)
        if hits:
            with store.transaction(conn):
                conn.executemany("INSERT INTO hits VALUES (?, ?, ?, ?)", hits)
    finally:
        conn.close()


# ---------------------------------------------------------------- arguments


def parse_args(
    area: str,
    argv: Sequence[str] | None = None,
    extra: Callable[[argparse.ArgumentParser], object] | None = None,
) -> argparse.Namespace:
    """The options every bench takes: --quick, --runs, --json (and a bench's own, `extra`)."""
    p = argparse.ArgumentParser(description=f"withcache benchmark: {area}")
    if extra is not None:
        extra(p)
    p.add_argument("--quick", action="store_true", help="fewer runs and smaller loads")
    p.add_argument("--runs", type=int, default=None, help="runs per case (default 5; quick 3-5)")
    p.add_argument(
        "--json",
        type=Path,
        help="results file (default: bench/results/AREA.json; bench/results/quick/AREA.json "
        "with --quick, so a quick run never replaces the committed figures)",
    )
    args = p.parse_args(argv)
    if args.json is None:
        args.json = (RESULTS / "quick" if args.quick else RESULTS) / f"{area}.json"
    return args


_T0 = time.monotonic()


def log(msg: str) -> None:
    """Progress on stderr, with the seconds since the bench started."""
    print(f"  [{time.monotonic() - _T0:5.1f}s] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- measuring


@dataclass
class Stats:
    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def max(self) -> float:
        return max(self.samples)


def time_runs(
    fn: Callable[[], object],
    runs: int = 5,
    *,
    setup: Callable[[], object] | None = None,
    warmup: int = 0,
) -> Stats:
    """Wall time of fn() in seconds, `runs` times; setup() runs untimed before each."""

    def timed() -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    return sample_runs(timed, runs, setup=setup, warmup=warmup)


def sample_runs(
    fn: Callable[[], float],
    runs: int = 5,
    *,
    setup: Callable[[], object] | None = None,
    warmup: int = 0,
) -> Stats:
    """fn() returns the figure itself (req/s from wrk, MB/s ...), `runs` times."""
    out = []
    for i in range(warmup + runs):
        if setup:
            setup()
        v = float(fn())
        if i >= warmup:
            out.append(v)
    return Stats(out)


def run(
    argv: Sequence[str], *, timeout: float = 120, check: bool = True, **kw: object
) -> subprocess.CompletedProcess[str]:
    """subprocess.run with text output captured, a timeout, and stderr shown on failure."""
    proc = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,  # type: ignore[call-overload]
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(map(str, argv))} -> exit {proc.returncode}\n{proc.stderr[-2000:]}"
        )
    return proc


def time_cmd(
    argv: Sequence[str],
    runs: int = 5,
    *,
    timeout: float = 120,
    setup: Callable[[], object] | None = None,
    warmup: int = 0,
    **kw: object,
) -> Stats:
    """Wall time of a command (checked: a failing run raises), `runs` times."""
    return time_runs(lambda: run(argv, timeout=timeout, **kw), runs, setup=setup, warmup=warmup)


def settle(pause: float = 0.05) -> None:
    """Flush dirty pages to disk (untimed) so the next case does not pay for the
    writeback of the previous one; call it in a case's setup."""
    os.sync()
    time.sleep(pause)


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


# ---------------------------------------------------------------- files


@contextlib.contextmanager
def tmpdir(prefix: str) -> Iterator[Path]:
    """A directory under /tmp that nginx's `nobody` worker can read; removed afterwards."""
    d = Path(tempfile.mkdtemp(prefix=prefix + "-", dir="/tmp"))
    try:
        d.chmod(0o755)
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def make_file(path: Path, size: int, seed: int = 0) -> str:
    """Write `size` incompressible, deterministic bytes; return their sha256.

    Every 1 MiB block is the same pseudo-random block with its index in the first
    8 bytes, so no two blocks are equal; about 1-2 s per GiB.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    block = bytearray(hashlib.shake_256(f"withcache-bench-{seed}".encode()).digest(MiB))
    h = hashlib.sha256()
    with path.open("wb") as f:
        left, i = size, 0
        while left:
            block[:8] = i.to_bytes(8, "little")
            chunk = memoryview(block)[: min(MiB, left)]
            f.write(chunk)
            h.update(chunk)
            left -= len(chunk)
            i += 1
    path.chmod(0o644)
    return h.hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(
    port: int,
    timeout: float = 10.0,
    host: str = "127.0.0.1",
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    """Until something accepts connections on host:port; TimeoutError after `timeout`
    seconds, or as soon as `proc` (the server we wait for) has exited."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise TimeoutError(f"the server exited with status {proc.returncode}") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.02)


# ---------------------------------------------------------------- nginx


def nginx_version() -> str:
    if not have("nginx"):
        return "not installed"
    out = run(["nginx", "-v"], check=False, timeout=10)
    return (out.stderr or out.stdout).strip().removeprefix("nginx version: nginx/")


def minimal_nginx_conf(root: Path, port: int, run_dir: Path, *, access_log: bool = False) -> Path:
    """nginx's ceiling: one static server on 127.0.0.1:port serving `root`, sendfile on.

    Same worker count and keepalive as withcache's config, nothing else: no JSON log
    (unless access_log), no map, no try_files. Returns the config path (in run_dir).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    run_dir.chmod(0o755)
    log = f"access_log {run_dir}/access.log;" if access_log else "access_log off;"
    conf = run_dir / "nginx.conf"
    conf.write_text(
        f"""worker_processes auto;
pid {run_dir}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    client_body_temp_path {run_dir}/client_body;
    proxy_temp_path {run_dir}/proxy;
    fastcgi_temp_path {run_dir}/fastcgi;
    uwsgi_temp_path {run_dir}/uwsgi;
    scgi_temp_path {run_dir}/scgi;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65s;
    keepalive_requests 10000;
    {log}
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""
    )
    return conf


@contextlib.contextmanager
def serving(argv: Sequence[str], port: int, timeout: float = 10, **popen: object) -> Iterator[None]:
    """Run a server process until the block ends; wait until `port` accepts connections.
    Its stderr goes to a temporary file (shown if it fails to start; a pipe nobody reads
    could fill up and stall it). Stopped with SIGTERM, then SIGKILL (see stop())."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            list(argv),
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
            **popen,  # type: ignore[call-overload]
        )
        try:
            try:
                wait_port(port, timeout, proc=proc)
            except TimeoutError:
                proc.kill()
                proc.wait(5)
                err.seek(0)
                text = err.read().decode(errors="replace").strip()[-2000:]
                raise RuntimeError(f"{argv[0]} did not start: {text}") from None
            yield
        finally:
            stop(proc)


def nginx_running(
    conf: Path, prefix: Path, port: int, timeout: float = 10
) -> contextlib.AbstractContextManager[None]:
    """Run `nginx -p prefix/ -c conf -g 'daemon off;'` until the block ends."""
    argv = ["nginx", "-p", f"{prefix}/", "-e", "stderr", "-c", str(conf), "-g", "daemon off;"]
    return serving(argv, port, timeout)


def stop(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM (nginx: fast stop), then SIGKILL of its whole process group."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(grace)


@contextlib.contextmanager
def static_origin(root: Path) -> Iterator[str]:
    """A loopback origin: minimal nginx serving `root`. Yields the base URL.

    Falls back to file_origin() (pure Python) when nginx is missing.
    """
    if not have("nginx"):
        with file_origin(root) as base:
            yield base
        return
    port = free_port()
    run_dir = Path(tempfile.mkdtemp(prefix="bench-origin-", dir="/tmp"))
    try:
        conf = minimal_nginx_conf(root, port, run_dir)
        with nginx_running(conf, run_dir, port):
            yield f"http://127.0.0.1:{port}"
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


class _FileHandler(http.server.SimpleHTTPRequestHandler):
    """GET/HEAD of files under `directory`, body sent with socket.sendfile."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def copyfile(self, source, outputfile) -> None:  # type: ignore[no-untyped-def]
        self.connection.sendfile(source)


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


@contextlib.contextmanager
def file_origin(root: Path) -> Iterator[str]:
    """A pure-Python loopback origin over `root` (threads + sendfile). Yields the base URL."""
    handler = lambda *a, **kw: _FileHandler(*a, directory=str(root), **kw)  # noqa: E731
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# ---------------------------------------------------------------- the PyPI peer

PEER_VENV = Path("/tmp/wcpeer")
PEER_VERSION = "0.13.3"


def ensure_peer() -> tuple[Path | None, str]:
    """The PyPI `withcache` package's venv (created once if missing).

    Returns (venv, "") or (None, why it is unavailable), so a bench can skip its rows.
    """
    server = PEER_VENV / "bin" / "withcache-server"
    if server.exists():
        return PEER_VENV, ""
    try:
        run([sys.executable, "-m", "venv", str(PEER_VENV)], timeout=120)
        pip = str(PEER_VENV / "bin" / "pip")
        run([pip, "install", "-q", f"withcache=={PEER_VERSION}"], timeout=600)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        return None, f"cannot install withcache=={PEER_VERSION} into {PEER_VENV}: {exc}"
    if not server.exists():
        return None, f"withcache=={PEER_VERSION} installed no withcache-server"
    return PEER_VENV, ""


def b64_token(url: str) -> str:
    return base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


class Peer:
    """A running `withcache-server` (PyPI withcache) on loopback, seeded through its API."""

    def __init__(self, base: str) -> None:
        self.base = base

    def _post(self, path: str, body: dict[str, object] | None = None) -> int:
        data = json.dumps(body or {}).encode()
        req = urllib.request.Request(
            self.base + path, data=data, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return int(resp.status)

    def blob_url(self, url: str) -> str:
        """Where it serves an origin URL once fetched: /b/<base64url(url)>/<name>."""
        return f"{self.base}/b/{b64_token(url)}/{url.rsplit('/', 1)[-1] or 'download'}"

    def cached(self, url: str) -> bool:
        req = urllib.request.Request(self.blob_url(url), method="HEAD")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status == 200
        except urllib.error.HTTPError:
            return False

    def fill(self, url: str, name: str, timeout: float = 300) -> float:
        """Seed `url` through the peer's API: add a catalog entry (once), request its
        download with ?force=1 (drops a previous copy), wait until the blob is served.
        Returns the seconds from the download request to the first 200 HEAD (polled
        every 20 ms)."""
        try:
            self._post("/catalog/entries", {"name": name, "src": url})
        except urllib.error.HTTPError as exc:
            if exc.code != 409:  # 409: the entry exists from an earlier fill
                raise
        path = f"/catalog/entries/{urllib.parse.quote(name, safe='')}/download?force=1"
        t0 = time.perf_counter()
        self._post(path)
        deadline = time.monotonic() + timeout
        while not self.cached(url):
            if time.monotonic() > deadline:
                raise TimeoutError(f"withcache-server did not fetch {url} in {timeout}s")
            time.sleep(0.02)
        return time.perf_counter() - t0


@contextlib.contextmanager
def peer_server(venv: Path, data_dir: Path, workers: int = 2) -> Iterator[Peer]:
    """Run the peer's `withcache-server` on a free loopback port until the block ends.

    Its startup catalog fetch is pointed at a closed local port, so nothing leaves
    the machine; no admin password, so its catalog API is open.
    """
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    drop = ("WITHCACHE_ADMIN_PASSWORD", "PYTHONPATH")  # open API; its own withcache package
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["WITHCACHE_CATALOG_URL"] = f"http://127.0.0.1:{free_port()}/catalog.toml"
    argv = [
        str(venv / "bin" / "withcache-server"),
        *("--host", "127.0.0.1", "--port", str(port)),
        *("--data-dir", str(data_dir), "--workers", str(workers)),
    ]
    with serving(argv, port, 30, cwd=data_dir, env=env):
        yield Peer(f"http://127.0.0.1:{port}")


# ---------------------------------------------------------------- results


def machine() -> dict[str, str]:
    """What the figures ran on: nproc, CPU model, kernel, nginx, Python, load average."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError, IndexError, ValueError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / (1 << 20):.1f} GiB"
    load = ""
    with contextlib.suppress(OSError):
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "nginx": nginx_version(),
        "python": platform.python_version(),
        "load": load,  # 1/5/15-min load average when the bench finished: others' work
    }


@dataclass
class Row:
    case: str
    unit: str
    median: float | None = None
    min: float | None = None
    max: float | None = None
    samples: list[float] = field(default_factory=list)
    baseline: str | None = None  # the case this row is compared with
    ratio: float | None = None  # > 1 better than the baseline
    target: float | None = None  # minimum ratio wanted
    limit: float | None = None  # absolute bound on the median (max time, min rate)
    met: bool | None = None
    paired: bool = False  # ratio = median of per-round ratios (interleaved runs)
    skipped: str | None = None  # why the case did not run
    note: str = ""


class Table:
    """Rows of one area; a row marked baseline=True is the reference for the rows after it
    (until the next baseline), unless a row names its baseline explicitly."""

    def __init__(self, area: str, json_path: Path | None = None) -> None:
        self.area = area
        self.json_path = json_path or RESULTS / f"{area}.json"
        self.rows: list[Row] = []
        self._current: Row | None = None
        self.started = time.time()

    def add(
        self,
        case: str,
        stats: Stats,
        unit: str,
        *,
        baseline: bool | str = False,
        target: float | None = None,
        note: str = "",
        paired: bool = False,
        limit: float | None = None,
    ) -> Row:
        """A measured case. `paired`: sample i of this case and of its baseline ran in the
        same round (interleaved), so the ratio is the median of the per-round ratios,
        which cancels drift between rounds; otherwise it is the ratio of the medians."""
        row = Row(case, unit, stats.median, stats.min, stats.max, list(stats.samples), note=note)
        if baseline is True:
            self._current = row
            row.ratio = 1.0
        else:
            ref = self._find(baseline) if isinstance(baseline, str) else self._current
            if ref is not None and ref.median and ref.unit == unit:
                row.baseline = ref.case
                if paired and len(ref.samples) == len(stats.samples):
                    per_round = map(ratio, stats.samples, ref.samples, [unit] * len(ref.samples))
                    row.ratio = statistics.median(per_round)
                    row.paired = True
                else:
                    row.ratio = ratio(stats.median, ref.median, unit)
        checks = []
        if target is not None:
            row.target = target
            checks.append(row.ratio is not None and row.ratio >= target)
        if limit is not None:  # an absolute bound: at most `limit` seconds, at least a rate
            row.limit = limit
            better = stats.median <= limit if unit in TIME_UNITS else stats.median >= limit
            checks.append(better)
        if checks:
            row.met = all(checks)
        self.rows.append(row)
        log(format_row(row))
        return row

    def skip(self, case: str, why: str) -> Row:
        row = Row(case, "", skipped=why)
        self.rows.append(row)
        log(f"SKIP {case}: {why}")
        return row

    def _find(self, case: str) -> Row | None:
        return next((r for r in self.rows if r.case == case and r.median is not None), None)

    def _cells(self) -> list[list[str]]:
        """One row of text cells per case: case, median, min–max, unit, ratio, note."""
        out = []
        for r in self.rows:
            if r.skipped:
                out.append([r.case, "skipped", "", "", "", r.skipped])
                continue
            assert r.median is not None and r.min is not None and r.max is not None
            rt = "baseline" if r.baseline is None and r.ratio == 1.0 else fmt_ratio(r)
            spread = f"{fmt(r.min)}–{fmt(r.max)}"
            out.append([r.case, fmt(r.median), spread, r.unit, rt, r.note])
        return out

    def render(self) -> str:
        lines = [["case", "median", "min–max", "unit", "ratio", "note"], *self._cells()]
        widths = [max(len(line[i]) for line in lines) for i in range(5)]
        out = []
        for n, line in enumerate(lines):
            cells = [line[0].ljust(widths[0])]
            cells += [c.rjust(w) for c, w in zip(line[1:5], widths[1:5], strict=True)]
            out.append(("  ".join(cells) + "  " + line[5]).rstrip())
            if n == 0:
                out.append("-" * len(out[-1]))
        return "\n".join(out)

    def markdown(self) -> str:
        out = ["| case | median | min–max | unit | ratio | note |", "|---|---:|---:|---|---:|---|"]
        out += ["| " + " | ".join(cells) + " |" for cells in self._cells()]
        return "\n".join(out)

    def finish(self) -> int:
        """Print the table and write the JSON results; return 0 (for sys.exit)."""
        print(f"\n== {self.area} ==")
        print(self.render())
        print()
        self.json_path.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "area": self.area,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "seconds": round(time.time() - self.started, 1),
            "argv": sys.argv[1:],
            "machine": machine(),
            "rows": [asdict(r) for r in self.rows],
            "markdown": self.markdown(),
        }
        self.json_path.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"results: {self.json_path}")
        return 0


def ratio(value: float, base: float, unit: str) -> float:
    """How many times better `value` is than `base` (> 1 better)."""
    if unit in TIME_UNITS:
        return base / value if value else float("inf")
    return value / base if base else float("inf")


def fmt(x: float) -> str:
    if x == 0:
        return "0"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def fmt_ratio(r: Row) -> str:
    if r.ratio is None:
        return ""
    text = f"{r.ratio:.3g}x"
    wanted = []
    if r.target is not None:
        wanted.append(f"≥{r.target:g}x")
    if r.limit is not None:
        wanted.append(f"{'≤' if r.unit in TIME_UNITS else '≥'}{r.limit:g} {r.unit}")
    if wanted:
        text += f" ({'ok' if r.met else 'MISS'} {', '.join(wanted)})"
    return text


def format_row(r: Row) -> str:
    return (
        f"{r.case}: median {fmt(r.median or 0)} {r.unit} "
        f"({fmt(r.min or 0)}–{fmt(r.max or 0)}) {fmt_ratio(r)}"
    )
