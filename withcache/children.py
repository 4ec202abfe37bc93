"""Child processes withcache starts (nginx, the watcher, the upload service): one way to
stop them, so none is left behind when its parent stops."""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Iterator
from typing import Any


def stop(proc: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """SIGTERM (nginx, the watcher and the upload service stop cleanly on it), then
    SIGKILL after `grace` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def running(cmd: list[str], **kw: Any) -> Iterator[subprocess.Popen[Any]]:
    """Start `cmd`; stop it on the way out, whatever happened in between."""
    proc = subprocess.Popen(cmd, **kw)
    try:
        yield proc
    finally:
        stop(proc)
