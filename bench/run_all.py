#!/usr/bin/env python3
"""Run every bench/bench_*.py in turn, each bounded in time; then refresh bench/README.md.

    python3 bench/run_all.py            # make bench: the whole suite, about 17.5 minutes
    python3 bench/run_all.py --quick    # make bench-quick: under 3.5 minutes
    python3 bench/run_all.py --only serve,sync
    python3 bench/run_all.py --readme   # only rebuild README's tables from bench/results/

Each script gets its area's share of the suite's time budget (BUDGET below) plus what
the scripts before it left unused. One that overruns gets SIGINT (its try/finally blocks
stop the servers it started), then SIGKILL 15 s later, and is reported as timed out; the
suite goes on. A full run (not --quick, not --only) rewrites the results section of
bench/README.md from bench/results/*.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
README = BENCH / "README.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"

# Seconds: the whole suite (full, quick), and each area's share of it. A new area gets
# DEFAULT until it is listed here; the shares must add up to no more than the suite.
SUITE = {False: 1045, True: 226}
BUDGET = {  # area: (full, quick); indexed by the --quick flag (False 0, True 1)
    "serve": (100, 24),
    "sync": (140, 26),
    "index": (45, 6),
    "shim": (100, 10),
    "watch": (90, 14),
    "pyindex": (100, 16),
    "ondemand": (50, 8),
    "bundle": (100, 20),
    "budget": (20, 8),
    "upload": (90, 20),
    "mirror": (60, 14),
    "replicas": (150, 60),
}
DEFAULT = (60, 10)
ORDER = list(BUDGET)


def scripts(only: set[str] | None) -> list[Path]:
    found = {p.stem.removeprefix("bench_"): p for p in BENCH.glob("bench_*.py")}
    names = [n for n in ORDER if n in found] + sorted(set(found) - set(ORDER))
    return [found[n] for n in names if only is None or n in only]


def run_one(script: Path, quick: bool, budget: float) -> tuple[str, float]:
    """Run one bench with its output on our terminal; return (status, seconds)."""
    argv = [sys.executable, str(script), *(["--quick"] if quick else [])]
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, cwd=BENCH.parent, start_new_session=True)
    try:
        rc = proc.wait(budget)
        status = "ok" if rc == 0 else f"failed (exit {rc})"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGINT)  # KeyboardInterrupt: its finally blocks run
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        status = f"timed out after {budget:.0f}s"
    except KeyboardInterrupt:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(15)
        raise
    return status, time.monotonic() - t0


def results_markdown() -> str:
    """The README's results section: one table per area, with the machine it ran on."""
    docs = []
    for path in sorted(RESULTS.glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except ValueError:
            continue
        if isinstance(doc, dict) and "markdown" in doc:
            docs.append(doc)
    rank = {n: i for i, n in enumerate(ORDER)}
    docs.sort(key=lambda d: (rank.get(d.get("area", ""), len(ORDER)), d.get("area", "")))
    out = []
    for doc in docs:
        m = doc.get("machine", {})
        machine = ", ".join(f"{k} {str(v).removeprefix(k + '/')}" for k, v in m.items() if v)
        out += [
            f"### {doc['area']}",
            "",
            f"{doc.get('date', '?')}, {doc.get('seconds', '?')} s; {machine}",
            "",
            doc["markdown"],
            "",
        ]
    return "\n".join(out).rstrip() + "\n"


def update_readme() -> None:
    text = README.read_text() if README.exists() else f"{BEGIN}\n{END}\n"
    head, sep, rest = text.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        print(f"{README}: no {BEGIN} ... {END} section; not updated", file=sys.stderr)
        return
    README.write_text(f"{head}{BEGIN}\n{results_markdown()}{END}{tail}")
    print(f"updated {README}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="the short suite (under 3 minutes)")
    p.add_argument("--only", help="comma-separated areas, e.g. serve,sync")
    p.add_argument("--readme", action="store_true", help="only rebuild README's tables")
    args = p.parse_args()
    if args.readme:
        update_readme()
        return 0
    only = set(args.only.split(",")) if args.only else None
    todo = scripts(only)
    deadline = time.monotonic() + SUITE[args.quick]
    summary = []
    shares = [BUDGET.get(s.stem.removeprefix("bench_"), DEFAULT)[args.quick] for s in todo]
    for i, script in enumerate(todo):
        # Its own share plus whatever the scripts before it left unused, keeping the
        # shares of the scripts after it.
        budget = deadline - time.monotonic() - sum(shares[i + 1 :])
        if budget < 5:
            summary.append((script.stem, "not run: the suite's time budget is spent", 0.0))
            continue
        print(f"\n##### {script.name} (at most {budget:.0f}s)", flush=True)
        status, seconds = run_one(script, args.quick, budget)
        summary.append((script.stem, status, seconds))
    print("\n##### summary")
    for name, status, seconds in summary:
        print(f"{name:16s} {seconds:6.1f}s  {status}")
    total = sum(s for _, _, s in summary)
    print(f"{'total':16s} {total:6.1f}s")
    if not args.quick and only is None:
        update_readme()
    return 0 if all(status == "ok" for _, status, _ in summary) else 1


if __name__ == "__main__":
    raise SystemExit(main())
