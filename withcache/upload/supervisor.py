"""`withcache serve` once indexes are published: nginx and the upload service as one
foreground process.

Both are children; a signal that stops one stops both (SIGTERM/SIGINT fast, SIGQUIT
graceful), SIGHUP and SIGUSR1 go on to nginx (reload, reopen logs). nginx's
configuration follows the published definitions: when `withcache sync` changes
them, the config is rendered again, checked with `nginx -t` and nginx reloads; the
upload service runs while any index has writers. A service that dies (even kill -9)
is started again; reads never depend on it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

from withcache import children, nginx
from withcache.errors import NginxError
from withcache.indexes import model
from withcache.layout import Layout
from withcache.upload import service

POLL = 0.5  # seconds between looks at the children and the definitions
RESTART_AFTER = 1.0


def say(msg: str) -> None:
    print(f"withcache: {msg}", file=sys.stderr, flush=True)


def service_command(layout: Layout) -> list[str]:
    return [sys.executable, "-m", "withcache", "upload-service", "--data", str(layout.root)]


@dataclass
class Supervisor:
    """nginx and the upload service for one data dir."""

    layout: Layout
    settings: Callable[[], nginx.Settings]  # rendered again when the definitions change
    nginx_proc: subprocess.Popen[bytes] | None = None
    service_proc: subprocess.Popen[bytes] | None = None
    stopping: int | None = None
    pending: list[int] = field(default_factory=list)
    defs_stamp: tuple[int, int] | None = None

    def wants_service(self, s: nginx.Settings) -> bool:
        return any(ix.write for ix in s.indexes)

    def start_service(self) -> None:
        """Start the upload service and wait (up to 15 s) for its socket."""
        sock = service.socket_path(self.layout)
        service.check_socket_path(sock)
        sock.unlink(missing_ok=True)  # a killed service's socket: gone, so we see the new one
        self.service_proc = subprocess.Popen(service_command(self.layout))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and self.service_proc.poll() is None:
            if sock.exists():
                return
            time.sleep(0.05)

    def stop_service(self) -> None:
        if self.service_proc is not None:
            children.stop(self.service_proc, grace=15)
            self.service_proc = None

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = model.path(self.layout).stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_ino

    def render(self) -> nginx.Settings:
        s = self.settings()
        conf = nginx.write_config(s)
        nginx.check(conf)
        return s

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1):
            signal.signal(sig, self._on_signal)
        self.defs_stamp = self._stamp()
        s = self.render()
        if self.wants_service(s):
            self.start_service()
        conf = self.layout.run / "nginx.conf"
        self.nginx_proc = subprocess.Popen(nginx.command(conf, "-g", "daemon off;"))
        try:
            return self._loop()
        finally:
            if self.nginx_proc.poll() is None:
                children.stop(self.nginx_proc)
            self.stop_service()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.pending.append(signum)

    def _loop(self) -> int:
        assert self.nginx_proc is not None
        while True:
            while self.pending:
                sig = self.pending.pop(0)
                if sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
                    self.stopping = sig
                    self.nginx_proc.send_signal(sig)
                    self.stop_service()
                elif sig == signal.SIGHUP:
                    self._reload()
                else:
                    self.nginx_proc.send_signal(sig)
            code = self.nginx_proc.poll()
            if code is not None:
                return 0 if self.stopping is not None else code
            if self.stopping is None:
                self._keep_service()
                if self._stamp() != self.defs_stamp:
                    self.defs_stamp = self._stamp()
                    self._reload()
            time.sleep(POLL)

    def _keep_service(self) -> None:
        proc = self.service_proc
        if proc is not None and proc.poll() is not None:
            say(f"upload service exited ({proc.returncode}); starting it again")
            time.sleep(RESTART_AFTER)
            self.start_service()

    def _reload(self) -> None:
        """Definitions changed (or SIGHUP): new config, checked, then nginx reloads."""
        assert self.nginx_proc is not None
        try:
            s = self.render()
        except (NginxError, OSError) as exc:
            say(f"error: not reloading: {exc}")
            return
        if self.wants_service(s) and self.service_proc is None:
            self.start_service()
        elif not self.wants_service(s):
            self.stop_service()
        self.nginx_proc.send_signal(signal.SIGHUP)
        say("index definitions changed: nginx reloaded")


def supervise(layout: Layout, settings: Callable[[], nginx.Settings]) -> int:
    return Supervisor(layout, settings).run()
