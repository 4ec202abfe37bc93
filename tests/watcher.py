"""A real `withcache watch` process for tests, and a look at its checkpoint."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

from tests.conftest import ROOT, withcache_cmd


class Watcher:
    """`python -m withcache watch --data ...` as the operator runs it."""

    def __init__(self, data: Path, log: Path, *extra: str) -> None:
        self.data = data
        self.started = time.time()
        self.err_path = data.parent / "watch.err"
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        with self.err_path.open("ab") as err:
            self.proc = subprocess.Popen(
                withcache_cmd("watch", "--data", str(data), "--log", str(log), *extra),
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def term(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(20)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")


def db(data: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(data / "state" / "withcache.db", timeout=30)
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def checkpoint(data: Path, log: Path) -> tuple[int, int] | None:
    if not (data / "state" / "withcache.db").exists():
        return None
    conn = db(data)
    try:
        row = conn.execute(
            "SELECT inode, offset FROM log_offsets WHERE log = ?", (os.path.abspath(log),)
        ).fetchone()
    except sqlite3.OperationalError:  # tables not created yet
        return None
    finally:
        conn.close()
    return None if row is None else (row[0], row[1])
