"""Render nginx's configuration from nginx/*.j2, check it with `nginx -t`, run it.

The standalone config and the system snippet include the same server block, so
the read path cannot drift between `withcache serve` and a system nginx.
"""

from __future__ import annotations

import functools
import grp
import os
import pwd
import shutil
import stat
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from withcache import keys
from withcache.errors import NginxError, UsageError
from withcache.indexes.model import PRIVATE_TOKEN_PREFIX, Index
from withcache.layout import Layout

if TYPE_CHECKING:
    import jinja2

    from withcache.mirrors.config import Mirror

# A PEP 503 normalised project name, as nginx matches it under /simple/.
PROJECT_RE = "[a-z0-9]+(?:-[a-z0-9]+)*"
INSTALL_HINT = "nginx is not installed; install it with: apt-get install nginx"
DEFAULT_MAX_UPLOAD = 2 << 30


def index_context(layout: Layout, indexes: Sequence[Index], max_upload: int) -> dict[str, object]:
    """What nginx/indexes*.conf.j2 need: the indexes, the auth files, the upload socket."""
    return {
        "indexes": [
            {
                "name": ix.name,
                "open": ix.open,
                "write": bool(ix.write),
                "base": ix.base,
                "where": ix.where,
                "token_prefix": ix.token_prefix,
            }
            for ix in indexes
        ],
        "private_token_prefix": PRIVATE_TOKEN_PREFIX,
        "auth_dir": layout.state / "auth",
        "upload_socket": layout.run / "upload.sock",
        "max_upload": max_upload,
    }


def templates_dir() -> Path:
    """nginx/ in a source checkout, withcache/_nginx/ in an installed wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_nginx", here.parent / "nginx"):
        if (candidate / "server.conf.j2").exists():
            return candidate
    raise NginxError(f"nginx templates not found next to {here}")


@dataclass(frozen=True)
class TLS:
    """A certificate and key for the https listeners, which serve the same tree as the
    http ones: shims that forbid http (`curl --proto =https`) can still hit the cache."""

    cert: Path
    key: Path
    listen: Sequence[str] = ("8443",)


def tls_settings(cert: Path | None, key: Path | None, listen: Sequence[str] = ()) -> TLS | None:
    """--tls-cert/--tls-key/--tls-listen as given -> TLS, or None without a certificate.
    Files are checked here, so a typo is one clear line rather than nginx's words."""
    if cert is None and key is None:
        if listen:
            raise UsageError("--tls-listen needs --tls-cert and --tls-key")
        return None
    if cert is None or key is None:
        raise UsageError("--tls-cert and --tls-key go together")
    for opt, path in (("--tls-cert", cert), ("--tls-key", key)):
        if not path.is_file():
            raise UsageError(f"{opt} {path}: no such file")
        if not os.access(path, os.R_OK):
            raise UsageError(f"{opt} {path}: not readable")
    return TLS(cert.resolve(), key.resolve(), tuple(listen) or ("8443",))


@dataclass(frozen=True)
class Settings:
    """Everything the templates need; absolute paths only (nginx resolves relative ones
    against its prefix, not our working directory)."""

    layout: Layout
    listen: Sequence[str] = ("8080",)
    user: str | None = None
    error_log: str | None = None  # besides DATA/run/error.log (serve adds stderr)
    workers: str = "auto"
    server_name: str = "_"
    aio_threads: bool = False
    indexes: tuple[Index, ...] = ()  # the private indexes (state/indexes.json)
    max_upload: int = DEFAULT_MAX_UPLOAD  # bytes; nginx answers 413 above it
    mirrors: Sequence[Mirror] = ()  # the manifests' mirrors: fall-through ones get locations
    tls: TLS | None = None

    def context(self) -> dict[str, object]:
        root = self.layout.root.resolve()
        lay = Layout(root)
        return {
            "data": root,
            "www": lay.www,
            "run": lay.run,
            "access_log": lay.access_log,
            "error_log": self.error_log,
            "listen": [listen_directive(a) for a in self.listen],
            "artifact_headers": lay.artifact_headers,
            "headers": [],  # the generic /b/ location's: none of an origin's
            "tls_listen": [listen_directive(a) for a in self.tls.listen] if self.tls else [],
            "tls_cert": self.tls.cert if self.tls else None,
            "tls_key": self.tls.key if self.tls else None,
            "user": self.user,
            "workers": self.workers,
            "server_name": self.server_name,
            "aio_threads": self.aio_threads and has_threads(),
            "token_re": keys.TOKEN_PATH_RE,
            "project_re": PROJECT_RE,
            **index_context(lay, self.indexes, self.max_upload),
            **_mirror_context(self.mirrors),
        }


def _mirror_context(mirrors: Sequence[Mirror]) -> dict[str, object]:
    from withcache.mirrors import proxy  # ssl and the manifest code: only when rendering

    return proxy.context(mirrors)


def listen_directive(addr: str) -> str:
    """'8080', '127.0.0.1:8080', '[::1]:8080' -> nginx `listen` arguments."""
    host, sep, port = addr.rpartition(":")
    if not sep:
        port, host = addr, ""
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise NginxError(f"--listen wants HOST:PORT or PORT, got {addr!r}")
    if host.startswith("[") or not host:
        return f"{host}:{port}" if host else port
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


@functools.cache
def _env() -> jinja2.Environment:
    """One environment per process, so each template is compiled once (sync and the
    watcher render artifact_headers again and again)."""
    import jinja2  # not needed by the commands that only import this module's helpers

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir()),
        autoescape=False,  # nginx syntax, not HTML
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_template(name: str, context: Mapping[str, object]) -> str:
    """One template of nginx/ with the given context (front doors with their own
    top-level config, such as the edge cache, render through this)."""
    return _env().get_template(name).render(**context)


def render_standalone(s: Settings) -> str:
    return _env().get_template("nginx.conf.j2").render(**s.context())


def render_server_block(s: Settings) -> str:
    return _env().get_template("conf.d.conf.j2").render(**s.context())


def nginx_binary() -> str:
    """$WITHCACHE_NGINX, else nginx on PATH, else Debian's /usr/sbin/nginx."""
    override = os.environ.get("WITHCACHE_NGINX")
    if override:
        if not os.access(override, os.X_OK):
            raise NginxError(f"WITHCACHE_NGINX={override} is not executable; {INSTALL_HINT}")
        return override
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if not found:
        raise NginxError(INSTALL_HINT)
    return found


_threads: bool | None = None


def has_threads() -> bool:
    """Whether this nginx was built --with-threads (Debian's is): then `aio threads`."""
    global _threads
    if _threads is None:
        try:
            out = subprocess.run(
                [nginx_binary(), "-V"], capture_output=True, text=True, timeout=10
            ).stderr
            _threads = "--with-threads" in out
        except (NginxError, OSError, subprocess.SubprocessError):
            _threads = False
    return _threads


def write_config(s: Settings) -> Path:
    """Render the standalone config into DATA/run/nginx.conf (and create its dirs)."""
    lay = s.layout.ensure()
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (lay.run / sub).mkdir(parents=True, exist_ok=True)
    lay.access_log.touch(exist_ok=True)
    write_artifact_headers(lay)
    conf = lay.run / "nginx.conf"
    conf.write_text(render_standalone(s))
    return conf


def render_artifact_headers(layout: Layout) -> bytes:
    """The server block's include of per-artifact locations (artifact_headers), from
    the state DB's records (none before the first sync)."""
    from withcache import artifact_headers, store  # the DB: only when this is written

    records: list[store.Artifact] = []
    if layout.db.exists():
        conn = store.connect(layout.db)
        try:
            records = [
                a
                for a in store.artifacts_with_origin_headers(conn)
                # never a location of its own for a private index's file: its guard wins
                if not keys.token(a.key).startswith(PRIVATE_TOKEN_PREFIX)
            ]
        finally:
            conn.close()
    text = (
        _env()
        .get_template("artifact-headers.conf.j2")
        .render(artifacts=artifact_headers.entries(records))
    )
    return text.encode("latin-1")  # header values are the bytes the origin sent


def write_artifact_headers(layout: Layout) -> bool:
    """Bring DATA/run/artifact-headers.conf in line with the records (whole or not at
    all); return whether it changed."""
    from withcache import atomic

    path = layout.artifact_headers
    text = render_artifact_headers(layout)
    try:
        if path.read_bytes() == text:
            return False
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write(path, text)
    return True


def refresh_artifact_headers(layout: Layout) -> str | None:
    """write_artifact_headers(), and when that changed the file have a running
    `withcache serve` reload it. Returns a warning when the reload failed (a system
    nginx is the operator's to reload)."""
    if write_artifact_headers(layout):
        return reload_running(layout)
    return None


def reload_running(layout: Layout) -> str | None:
    """`nginx -s reload` for the nginx `withcache serve` runs on this data dir, if one
    does (its pid file names a live process), so it re-reads the files its config
    includes (artifact_headers). None when it reloaded or none runs, else why not."""
    conf = layout.run / "nginx.conf"
    try:
        pid = int((layout.run / "nginx.pid").read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    try:
        proc = subprocess.run(
            command(conf, "-s", "reload"), capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError, NginxError) as exc:
        return f"nginx -s reload: {exc}"
    if proc.returncode != 0:
        return "nginx -s reload failed: " + (proc.stderr + proc.stdout).strip()
    return None


def command(conf: Path, *extra: str) -> list[str]:
    run = conf.parent.resolve()
    return [nginx_binary(), "-p", f"{run}/", "-e", "stderr", "-c", str(conf.resolve()), *extra]


def check(conf: Path) -> None:
    """`nginx -t`; on failure raise with nginx's own words."""
    proc = subprocess.run(command(conf, "-t", "-q"), capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        output = (proc.stderr + proc.stdout).strip()
        raise NginxError("nginx -t failed:\n  " + output.replace("\n", "\n  "))


def default_user() -> str:
    for name in ("www-data", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise NginxError("neither www-data nor nobody exists; pass --user")


def unreadable_dir(www: Path, user: str) -> Path | None:
    """The first directory on the way to www/ that `user` cannot enter (or read), if any."""
    try:
        pw = pwd.getpwnam(user)
    except KeyError as exc:
        raise NginxError(f"no such user: {user}") from exc
    groups = {pw.pw_gid} | {g.gr_gid for g in grp.getgrall() if user in g.gr_mem}
    path = www.resolve()
    chain = [*reversed(path.parents), path]
    for d in chain:
        need = 0o5 if d == path else 0o1  # r-x on www itself, x on every parent
        st = d.stat()
        if st.st_uid == pw.pw_uid:
            bits = (st.st_mode >> 6) & 0o7
        elif st.st_gid in groups:
            bits = (st.st_mode >> 3) & 0o7
        else:
            bits = st.st_mode & 0o7
        if bits & need != need or not stat.S_ISDIR(st.st_mode):
            return d
    return None


def exec_foreground(conf: Path) -> None:
    """Replace this process with nginx in the foreground: signals go straight to it
    (SIGTERM/SIGINT fast stop, SIGQUIT graceful)."""
    argv = command(conf, "-g", "daemon off;")
    os.execv(argv[0], argv)
