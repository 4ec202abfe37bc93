#!/usr/bin/env python3
"""shim: what curlwithcache costs per call, against plain curl in the same run.

A 4 KiB artifact is synced from a loopback origin (minimal nginx) into a data dir that
`withcache serve` serves over http and https (a throwaway CA, trusted through
CURL_CA_BUNDLE). Every case runs the same `curl -fsS -o /dev/null URL` CALLS times in
a dash loop (one process per run, so Python's spawn cost is spread thin):
  - plain curl of the origin URL (the baseline),
  - our shim (shims/curlwithcache): server unset (pass-through), hit, miss (a URL the
    cache lacks: probe 404, then the origin), cache down (refused port),
  - the same four for the PyPI withcache 0.13.3 package's native (compiled) shim and
    its Python shim (`python -m withcache.curlwithcache`), against the same nginx,
  - ours again, each against its own reference: a hit with curl exec'd instead of run
    as a child (the price of retrying a transfer the cache fails), a hit over https,
    a hit with a refused or a silent host listed first, every host down, a garbage
    WITHCACHE_SERVER and an https cache whose certificate curl does not trust.
Rounds interleave the cases, so each ratio is the median of per-round ratios; the note
gives the overhead per call over the reference. Every case is reported twice: wall
time, and CPU time (user + system of all its processes), which a busy machine inflates
far less. Targets: pass-through at most 1 ms over plain curl and hit at most the native
shim's hit + 2 ms (the shim issue); a hit over https at most 3 ms over one over http; a
down host first costs at most the probe timeout + 10 ms (the failover issue).
Full: 5 rounds of 30 calls (a fifth of that for the cases that take 0.1 s a call: the
Python shim, a silent host); --quick: 3 rounds of 20 calls, without the PyPI package.
"""

from __future__ import annotations

import os
import resource
import socket
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import common as c

from tests.tls import make_ca

SHIM = c.REPO / "shims" / "curlwithcache"
OURS = "curlwithcache (ours)"
HIT = f"{OURS}: hit"
SILENT_TIMEOUT = 0.1  # WITHCACHE_TIMEOUT where a host never answers


@dataclass
class Extra:
    """A case of ours measured against a reference case of the same run."""

    argv: list[str]
    env: dict[str, str]
    reference: str  # the case it is compared with
    limit: float | None  # at most this many ms over the reference's median
    what: str  # the note's words for the difference
    slow: bool = False  # seconds per call: a fifth of the calls


SCENARIOS = ("pass-through", "hit", "miss", "cache down")
# What each scenario forks in our shim: base64 and the probe, and on a hit curl as a
# child (its status decides whether to run again against the origin); else curl is exec'd.
FORKS = {"pass-through": "0 forks", "hit": "3 forks", "miss": "2 forks", "cache down": "2 forks"}

# Run "$@" CALLS times; stop at the first failure (a benchmark of errors is no benchmark).
LOOP = 'n=$1; shift; i=0; while [ "$i" -lt "$n" ]; do "$@" >/dev/null || exit 1; i=$((i+1)); done'


def per_call_ms(argv: list[str], env: dict[str, str], calls: int, cwd: Path) -> tuple[float, float]:
    """Milliseconds per call: wall time, and CPU time (user + system, every process
    of the loop), which a busy machine inflates far less than the wall time."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    loop = ["dash", "-c", LOOP, "loop", str(calls), *argv]
    c.run(loop, env=env, cwd=cwd, timeout=calls * 10 + 60)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return wall / calls * 1000, cpu / calls * 1000


def main() -> int:
    args = c.parse_args("shim")
    runs = args.runs or (3 if args.quick else 5)
    calls = 20 if args.quick else 30
    table = c.Table("shim", args.json)
    if not c.have("curl") or not c.have("dash"):
        table.skip("everything", "needs curl and dash")
        return table.finish()

    with c.tmpdir("bench-shim") as tmp, ExitStack() as stack:
        origin_dir = tmp / "origin"
        c.make_file(origin_dir / "pkg" / "tool-1.2.tar.gz", 4096)
        c.make_file(origin_dir / "pkg" / "not-cached.tar.gz", 4096, seed=1)
        origin = stack.enter_context(c.static_origin(origin_dir))
        cached_url = f"{origin}/pkg/tool-1.2.tar.gz"
        missing_url = f"{origin}/pkg/not-cached.tar.gz"

        data = tmp / "data"
        manifest = tmp / "manifest.yaml"
        manifest.write_text(f"artifacts:\n  - {cached_url}\n")
        c.run([*c.WITHCACHE, "sync", "-q", "--data", str(data), "-m", str(manifest)], timeout=120)
        ca = make_ca(tmp / "ca")
        port, tls_port, rogue_port = c.free_port(), c.free_port(), c.free_port()
        argv = [*c.WITHCACHE, "serve", "--data", str(data), "--listen", f"127.0.0.1:{port}"]
        argv += ["--tls-cert", str(ca.cert), "--tls-key", str(ca.key)]
        argv += ["--tls-listen", f"127.0.0.1:{tls_port}"]
        stack.enter_context(c.serving(argv, port))
        c.wait_port(tls_port)
        rogue = [*c.WITHCACHE, "serve", "--data", str(tmp / "rogue"), "--listen"]
        rogue += [f"127.0.0.1:{c.free_port()}", "--tls-cert", str(ca.rogue_cert)]
        rogue += ["--tls-key", str(ca.rogue_key), "--tls-listen", f"127.0.0.1:{rogue_port}"]
        stack.enter_context(c.serving(rogue, rogue_port))
        cache = f"http://127.0.0.1:{port}"
        down = f"127.0.0.1:{c.free_port()}"  # nothing listens there
        silent = stack.enter_context(socket.socket())  # accepts, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        mute = f"127.0.0.1:{silent.getsockname()[1]}"

        # A clean environment: no proxies, no server, PYTHONPATH only for our CLI.
        base_env = {
            k: v
            for k, v in os.environ.items()
            if "WITHCACHE" not in k and not k.lower().endswith("_proxy") and k != "PYTHONPATH"
        }
        base_env["HOME"] = str(tmp)  # no user curlrc
        server = {"pass-through": None, "hit": cache, "miss": cache, "cache down": down}
        url = {"pass-through": cached_url, "hit": cached_url, "miss": missing_url}
        url["cache down"] = cached_url

        fetch = ["-fsS", "-o", "/dev/null"]
        shims = {OURS: [str(SHIM)]}
        venv, why = (None, "full run only") if args.quick else c.ensure_peer()
        if venv is not None and (venv / "bin" / "curlwithcache").exists():
            shims[f"native shim {c.PEER_VERSION}"] = [str(venv / "bin" / "curlwithcache")]
            py = [str(venv / "bin" / "python"), "-m", "withcache.curlwithcache"]
            shims[f"Python shim {c.PEER_VERSION}"] = py
        elif venv is not None:
            why = f"{venv}/bin/curlwithcache is missing"

        cases: dict[str, tuple[list[str], dict[str, str]]] = {
            "plain curl": (["curl", *fetch, cached_url], base_env)
        }
        for name, cmd in shims.items():
            for sc in SCENARIOS:
                env = dict(base_env)
                if server[sc]:
                    env["WITHCACHE_SERVER"] = server[sc]  # type: ignore[assignment]
                cases[f"{name}: {sc}"] = ([*cmd, *fetch, url[sc]], env)
        ours = [str(SHIM), *fetch, cached_url]

        def with_server(value: str, **more: str) -> dict[str, str]:
            return dict(base_env, WITHCACHE_SERVER=value, CURL_CA_BUNDLE=str(ca.ca), **more)

        quick_probe = {"WITHCACHE_TIMEOUT": str(SILENT_TIMEOUT)}
        limit_down = SILENT_TIMEOUT * 1000 + 10
        floor = tmp / "exec-floor"  # the least an sh wrapper can cost: start, exec
        floor.write_text('#!/bin/sh\nexec curl "$@"\n')
        floor.chmod(0o755)
        extras = {
            "the floor of any sh shim: a script that only execs curl": Extra(
                [str(floor), *fetch, cached_url], base_env, "plain curl", None,
                "starting sh and exec'ing costs"),
            # A hit runs curl as a child, so that a transfer the cache fails can run
            # again against the origin; this copy execs it instead, to price that.
            "hit, curl exec'd (no retry of a failed transfer)": Extra(
                [str(exec_copy(tmp)), *fetch, cached_url], with_server(cache), HIT, None,
                "running curl as a child costs"),
            "hit over https (TLS 1.3, a CA in CURL_CA_BUNDLE)": Extra(
                ours, with_server(f"https://127.0.0.1:{tls_port}"), HIT, 3.0,
                "TLS costs"),
            "hit, a refused host listed first": Extra(
                ours, with_server(f"{down} {cache}"), HIT, 2000 + 10, "the down host costs"),
            f"hit, a silent host listed first (timeout {SILENT_TIMEOUT} s)": Extra(
                ours, with_server(f"{mute} {cache}", **quick_probe), HIT, limit_down,
                "the silent host costs", slow=True),
            f"all down: refused, silent (timeout {SILENT_TIMEOUT} s)": Extra(
                ours, with_server(f"{down},{mute}", **quick_probe), "plain curl", None,
                "two probes and a timeout cost", slow=True),
            "pass-through, garbage WITHCACHE_SERVER": Extra(
                ours, with_server("-x:/ ftp://x ://"), "plain curl", None,
                "reading the whole shim and the command costs"),
            "pass-through, an https cache curl does not trust": Extra(
                ours, with_server(f"https://127.0.0.1:{rogue_port}"), "plain curl", None,
                "pass-through costs"),
        }  # fmt: skip
        # Each round runs ours and its extras first, then the peers: an extra runs close
        # to its reference (the machine's drift within a round would bias the pair).
        ordered = {k: v for k, v in cases.items() if not k.startswith(("native", "Python"))}
        for name, extra in extras.items():
            ordered[f"{OURS}: {name}"] = (extra.argv, extra.env)
        cases = {**ordered, **cases}

        # Outside the checkout: `python -m withcache...` must find the peer's package.
        work = tmp / "work"
        work.mkdir()
        c.log("checking every case once")
        for argv_, env in cases.values():
            c.run(argv_, env=env, cwd=work, timeout=30)
        wall: dict[str, list[float]] = {k: [] for k in cases}
        cpu: dict[str, list[float]] = {k: [] for k in cases}
        slow = {f"{OURS}: {name}" for name, e in extras.items() if e.slow}
        slow |= {name for name in cases if name.startswith("Python shim")}
        for r in range(runs):
            c.log(f"round {r + 1}/{runs}: {len(cases)} cases x {calls} calls")
            for name, (argv_, env) in cases.items():
                w, u = per_call_ms(argv_, env, calls // 5 if name in slow else calls, work)
                wall[name].append(w)
                cpu[name].append(u)

    for kind, samples in (("", wall), ("CPU ", cpu)):
        stats = {k: c.Stats(v) for k, v in samples.items()}
        add_rows(table, kind, stats, list(shims))
        add_extras(table, kind, stats, extras)
    if len(shims) == 1:
        for label in ("native", "Python"):
            for sc in SCENARIOS:
                table.skip(f"{label} shim {c.PEER_VERSION}: {sc}", why)
    return table.finish()


def exec_copy(tmp: Path) -> Path:
    """The shim, but exec'ing curl on a hit (no retry of a failed transfer)."""
    text = SHIM.read_text()
    tried = 'eval "_wc_try $_wc_cmd"'
    if tried not in text:
        raise RuntimeError(f"{SHIM}: no {tried!r} to replace")
    copy = tmp / "curlwithcache"
    copy.write_text(text.replace(tried, 'eval "_wc_exec $_wc_cmd"'))
    copy.chmod(0o755)
    return copy


def add_rows(table: c.Table, kind: str, stats: dict[str, c.Stats], shims: list[str]) -> None:
    """Rows of one measure (wall or CPU time per call) against plain curl, with the
    overhead per call in the note and the issue's targets on our shim."""
    base = f"{kind}plain curl"
    plain = stats["plain curl"].median
    table.add(base, stats["plain curl"], "ms", baseline=True, note=f"{kind or 'wall '}per call")
    native_hit = stats.get(f"native shim {c.PEER_VERSION}: hit")
    for name in shims:
        for sc in SCENARIOS:
            s = stats[f"{name}: {sc}"]
            note = f"+{s.median - plain:.2f} ms"
            limit = None
            if name.endswith("(ours)"):
                note += f", {FORKS[sc]}"
                if sc == "pass-through":
                    limit = plain + 1.0
                    note += "; target: +1 ms"
                elif sc == "hit" and native_hit is not None:
                    limit = native_hit.median + 2.0
                    note += f"; target: native hit + 2 ms = {limit:.2f} ms"
            case = f"{kind}{name}: {sc}"
            table.add(case, s, "ms", baseline=base, paired=True, limit=limit, note=note)


def add_extras(
    table: c.Table, kind: str, stats: dict[str, c.Stats], extras: dict[str, Extra]
) -> None:
    """Each extra case against its own reference, with the difference in the note."""
    for name, extra in extras.items():
        s = stats[f"{OURS}: {name}"]
        ref = stats[extra.reference]
        extra_ms = s.median - ref.median  # of the medians (the ratio is per round)
        note = f"{extra.what} {extra_ms:+.2f} ms"
        limit = None
        if extra.limit is not None and not (kind and extra.slow):  # time waited: wall only
            limit = ref.median + extra.limit
            note += f"; target: +{extra.limit:g} ms"
        table.add(f"{kind}{OURS}: {name}", s, "ms", baseline=f"{kind}{extra.reference}",
                  paired=True, limit=limit, note=note)  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
