"""The upload service: gunicorn serving upload.app on a unix socket that nginx proxies to.

gunicorn, because the write path wants a well-kept pre-fork server whose arbiter
replaces a worker that dies. nginx streams each body to the service as it arrives
(proxy_request_buffering off: the bytes are written to disk once, in the partial
file, and hashed on the way), so an upload holds one thread for its length: 2
workers x 8 threads take 16 at once, more wait in the socket's backlog. The socket
is DATA/run/upload.sock (mode 0666: nginx's workers run as another user); the
application checks every uploader's password itself, so reaching it grants nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]

from withcache.errors import WithcacheError
from withcache.indexes import accept
from withcache.layout import Layout
from withcache.upload.app import make_app

WORKERS = 2
THREADS = 8  # an upload mostly waits on its client, on nginx and on fsync
SOCKET_MAX = 107  # sun_path holds 108 bytes with its NUL


def socket_path(layout: Layout) -> Path:
    return layout.run.resolve() / "upload.sock"


def check_socket_path(path: Path) -> None:
    if len(str(path).encode()) > SOCKET_MAX:
        raise WithcacheError(
            f"{path}: longer than the {SOCKET_MAX} bytes a unix socket path may have; "
            "use a shorter data dir"
        )


def _clean_partials(layout: Layout) -> None:
    """Uploads a killed service left half-written under state/partial/ never reached
    www/ or the DB; start without them."""
    for stale in accept.stale_partials(layout):
        stale.unlink(missing_ok=True)
        Path(str(stale) + ".metadata").unlink(missing_ok=True)


class Service(BaseApplication):  # type: ignore[misc]
    """gunicorn configured in code (no config file, no command line of its own)."""

    def __init__(self, layout: Layout, workers: int = WORKERS, threads: int = THREADS) -> None:
        self.layout = layout
        self.options: dict[str, Any] = {
            "bind": f"unix:{socket_path(layout)}",
            "umask": 0,
            "workers": workers,
            "worker_class": "gthread",
            "threads": threads,
            "timeout": 120,
            "graceful_timeout": 10,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": "warning",
            "proc_name": "withcache-upload",
            "on_starting": self._on_starting,
        }
        super().__init__()

    def _on_starting(self, _arbiter: Any) -> None:
        _clean_partials(self.layout)

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Callable[..., Any]:
        return make_app(self.layout)


def run(layout: Layout, workers: int = WORKERS, threads: int = THREADS) -> None:
    """Serve uploads in the foreground until SIGTERM (gunicorn's graceful stop)."""
    layout.ensure()
    sock = socket_path(layout)
    check_socket_path(sock)
    sys.argv = [sys.argv[0]]  # gunicorn parses sys.argv; the options are all set above
    Service(layout, workers, threads).run()
