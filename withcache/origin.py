"""A real loopback HTTP origin for the demo, the tests and the benchmarks.

Serves registered bodies with Range, ETag and Last-Modified, and can misbehave on
purpose: errors, slow bodies, connections dropped mid-body, wrong bytes. Every
request is recorded so tests can assert "no re-download" or "resumed with Range".
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ENDLESS_CAP = 8 << 30
ENDLESS_SECONDS = 120.0


@dataclass
class Route:
    body: bytes
    status: int = 200
    drop_after: int | None = None  # close the connection after this many body bytes
    drop_times: int = 1_000_000  # ... on this many requests, then behave
    delay: float = 0.0  # seconds before answering
    slow: float = 0.0  # seconds to sleep between 64 KiB chunks
    ranges: bool = True
    etag: str | None = None
    last_modified: float = 1_700_000_000.0
    headers: dict[str, str] = field(default_factory=dict)  # sent with every answer
    content_length: bool = True
    endless: bool = False  # repeat the body with no length until the client leaves
    trickle: int = 0  # bytes per second, in 4 pieces a second


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    client: tuple[str, int] = ("", 0)  # the connection it came on (address, port)


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # uv and pip open connections in bursts
    daemon_threads = True


class Origin:
    """ThreadingHTTPServer on 127.0.0.1:0; `add()` returns the full URL of a route.
    With `tls` (a server SSLContext) it speaks https, as most vendors do."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None
    ) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[Seen] = []
        self.lock = threading.Lock()
        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                origin._handle(self, head=True)

            def do_GET(self) -> None:
                origin._handle(self, head=False)

            def do_POST(self) -> None:  # recorded, body read and dropped, then as GET
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                origin._handle(self, head=False)

        self.server = _Server((host, port), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            # The handshake happens on the handler's first read, in its own thread,
            # so a client that never speaks cannot stall the accept loop.
            self.server.socket = tls.wrap_socket(
                self.server.socket, server_side=True, do_handshake_on_connect=False
            )
        self.port = self.server.server_address[1]
        self.base = f"{'https' if tls else 'http'}://{host}:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add(self, path: str, body: bytes = b"", **opts: object) -> str:
        route = Route(body, **opts)  # type: ignore[arg-type]
        if route.etag is None:
            route.etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        self.routes[path] = route
        return self.base + path

    def seen(self, path: str | None = None, method: str | None = None) -> list[Seen]:
        with self.lock:
            return [
                s
                for s in self.requests
                if (path is None or s.path == path) and (method is None or s.method == method)
            ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handle(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        path = h.path
        with self.lock:
            self.requests.append(
                Seen(
                    h.command,
                    path,
                    dict(h.headers.items()),
                    (h.client_address[0], h.client_address[1]),
                )
            )
            route = self.routes.get(path.split("?", 1)[0]) or self.routes.get(path)
            if route is not None and route.drop_after is not None and not head:
                dropping = route.drop_times > 0
                if dropping:
                    route.drop_times -= 1
            else:
                dropping = False
        if route is None:
            h.send_response(404)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        if route.delay:
            time.sleep(route.delay)
        if route.status != 200:  # errors and redirects: their headers and body as given
            h.send_response(route.status)
            h.send_header("Content-Length", str(len(route.body)))
            for k, v in route.headers.items():
                h.send_header(k, v)
            h.end_headers()
            if not head:
                h.wfile.write(route.body)
            return
        body, start, status = route.body, 0, 200
        rng = h.headers.get("Range")
        if_range = h.headers.get("If-Range")
        if (
            route.ranges
            and rng
            and rng.startswith("bytes=")
            and (if_range is None or if_range == route.etag)
        ):
            first, _, last = rng[6:].partition("-")
            start = int(first or 0)
            end = int(last) if last else len(body) - 1
            if start >= len(body):
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{len(body)}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            status = 206
            body = body[start : end + 1]
        inm = h.headers.get("If-None-Match")
        if inm is not None and inm == route.etag and status == 200:
            h.send_response(304)
            h.send_header("ETag", route.etag or "")
            h.end_headers()
            return
        h.send_response(status)
        if route.content_length and not route.endless:
            h.send_header("Content-Length", str(len(body)))
        else:
            h.send_header("Connection", "close")
        if status == 206:
            final = start + len(body) - 1
            h.send_header("Content-Range", f"bytes {start}-{final}/{len(route.body)}")
        if route.ranges:
            h.send_header("Accept-Ranges", "bytes")
        h.send_header("ETag", route.etag or "")
        h.send_header("Last-Modified", formatdate(route.last_modified, usegmt=True))
        for k, v in route.headers.items():
            h.send_header(k, v)
        h.end_headers()
        if head:
            return
        self._send_body(h, body, route, dropping)

    @staticmethod
    def _send_body(h: BaseHTTPRequestHandler, body: bytes, route: Route, dropping: bool) -> None:
        if route.endless or route.trickle:
            Origin._send_forever(h, body, route)
            return
        limit = route.drop_after if dropping and route.drop_after is not None else len(body)
        view = memoryview(body)[:limit]
        step = 1 << 16 if route.slow else 1 << 20
        try:
            for i in range(0, len(view), step):
                h.wfile.write(view[i : i + step])
                if route.slow:
                    time.sleep(route.slow)
            h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            return
        if dropping or not route.content_length:
            h.close_connection = True
            try:
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    @staticmethod
    def _send_forever(h: BaseHTTPRequestHandler, body: bytes, route: Route) -> None:
        """An origin that never finishes: the body again and again (endless), or the body
        a few bytes at a time (trickle). Bounded all the same: ENDLESS_CAP bytes or
        ENDLESS_SECONDS, whichever comes first, then the connection closes."""
        started = time.monotonic()
        sent = 0
        piece = max(1, route.trickle // 4) if route.trickle else 1 << 20
        chunk = (body * (piece // max(1, len(body)) + 1))[:piece] if body else b"\0" * piece
        try:
            while sent < ENDLESS_CAP and time.monotonic() - started < ENDLESS_SECONDS:
                h.wfile.write(chunk)
                sent += len(chunk)
                if route.trickle:
                    h.wfile.flush()
                    time.sleep(0.25)
        except OSError:
            return
        h.close_connection = True
