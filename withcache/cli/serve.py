"""serve, nginx-config: the read path."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from withcache.cli.common import (
    Subparsers,
    command,
    layout,
    manifest_paths,
    manifests_option,
    size_arg,
)
from withcache.errors import NginxError, UsageError

if TYPE_CHECKING:  # the modules themselves load with the command that runs (fast start)
    from withcache import edge, nginx
    from withcache.mirrors.config import Mirror


# the commands register() adds
COMMANDS = ("serve", "nginx-config")


def register(sub: Subparsers, parent: argparse.ArgumentParser) -> None:
    p = command(sub, parent, "serve", cmd_serve)
    _listen_options(p)
    p.add_argument(
        "--user",
        help="user for nginx's workers when started as root (default: www-data, else nobody)",
    )
    p.add_argument(
        "--check-only", action="store_true", help="render and `nginx -t` the config, then exit"
    )

    p = command(sub, parent, "nginx-config", cmd_nginx_config)
    _listen_options(p)
    p.add_argument(
        "--standalone", action="store_true", help="print the whole standalone nginx.conf instead"
    )


def _listen_options(p: argparse.ArgumentParser) -> None:
    manifests_option(p, "manifests whose `mirrors:` fall through to their sources")
    p.add_argument(
        "--aio-threads",
        action="store_true",
        help="offload file reads to nginx's thread pool (for slow disks; costs small files)",
    )
    p.add_argument(
        "--listen",
        action="append",
        metavar="HOST:PORT",
        help="address to listen on, repeatable (default: 8080 on every interface)",
    )
    p.add_argument(
        "--max-upload",
        type=size_arg,
        metavar="SIZE",
        help="largest upload to a private index, e.g. 500M, 2G (default 2G); nginx answers 413",
    )
    p.add_argument(
        "--tls-cert",
        type=Path,
        metavar="FILE",
        help="serve the same tree over https too, with this PEM certificate (chain)",
    )
    p.add_argument("--tls-key", type=Path, metavar="FILE", help="the certificate's PEM key")
    p.add_argument(
        "--tls-listen",
        action="append",
        metavar="HOST:PORT",
        help="https address, repeatable (default with --tls-cert: 8443 on every interface)",
    )
    _edge_options(p)


def _edge_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("edge cache (README: More than one host)")
    g.add_argument(
        "--edge",
        action="append",
        metavar="URL",
        help="be an edge cache of this center (http://center:8080) instead of serving "
        "DATA/www; further --edge URLs are backups (replicas) used when it is down",
    )
    g.add_argument("--max-size", default="100g", help="with --edge: cache size budget")
    g.add_argument(
        "--min-free", default="5g", help="with --edge: evict to keep this much disk free"
    )
    g.add_argument("--slice", default="8m", help="with --edge: bytes fetched per range request")


def settings(args: argparse.Namespace, user: str | None = None) -> nginx.Settings:
    from withcache import nginx, role
    from withcache.indexes import model as index_model

    lay = layout(args)
    indexes = tuple(index_model.load(lay).values())
    if role.replica_of(lay) is not None:  # the center's indexes, read-only: no uploads here
        indexes = tuple(dataclasses.replace(ix, write=()) for ix in indexes)
    return nginx.Settings(
        layout=lay,
        listen=tuple(args.listen or ["8080"]),
        user=user,
        error_log="stderr",
        aio_threads=args.aio_threads,
        indexes=indexes,
        max_upload=args.max_upload or nginx.DEFAULT_MAX_UPLOAD,
        mirrors=_mirrors(args),
        tls=nginx.tls_settings(args.tls_cert, args.tls_key, args.tls_listen or ()),
    )


def _mirrors(args: argparse.Namespace) -> tuple[Mirror, ...]:
    """The manifests' mirrors (the fall-through ones need locations); none when the
    manifests directory does not exist. A broken manifest stops here, as in sync."""
    existing = [p for p in manifest_paths(args.manifests) if p.exists()]
    if not existing:
        return ()
    from withcache import manifest

    return manifest.load(existing).mirrors


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve DATA/www/ with nginx in the foreground (Ctrl-C or SIGTERM stops it).

    Renders DATA/run/nginx.conf, checks it with `nginx -t`, then becomes nginx.
    Started as root, nginx's workers run as --user after checking that this user
    can read www/. The access log goes to DATA/log/access.log for `withcache watch`.

    With --tls-cert/--tls-key the same tree is served over https as well
    (--tls-listen, default 8443), for shims told WITHCACHE_SERVER=https://HOST:8443.

    example:
      withcache serve --data /srv/withcache --listen 0.0.0.0:8080
      withcache serve --data /srv/withcache --tls-cert cache.pem --tls-key cache.key
    """
    from withcache import nginx
    from withcache.indexes import model as index_model

    nginx.nginx_binary()  # first: a missing nginx is the likeliest problem on a new host
    if args.edge:
        return _serve_edge(args)
    user = None
    lay = layout(args).ensure()
    if os.geteuid() == 0:
        user = args.user or nginx.default_user()
        blocked = nginx.unreadable_dir(lay.www, user)
        if blocked is not None:
            raise NginxError(
                f"nginx's workers run as {user}, who cannot read {blocked}; "
                f"hint: chmod o+rx {blocked} (or pass --user)"
            )
    s = settings(args, user)
    conf = nginx.write_config(s)
    if _checked_only(conf, args):
        return 0
    listen = ", ".join(s.listen)
    if s.tls:
        listen += ", https on " + ", ".join(s.tls.listen)
    log = lay.access_log.resolve()
    print(
        f"withcache: serving {lay.www.resolve()} on {listen}; access log {log}",
        file=sys.stderr,
    )
    sys.stderr.flush()
    if index_model.path(lay).exists():  # private indexes: nginx and the upload service together
        from withcache.upload import supervisor

        return supervisor.supervise(lay, lambda: settings(args, user))
    nginx.exec_foreground(conf)
    return 0  # not reached


def _checked_only(conf: Path, args: argparse.Namespace) -> bool:
    """Run `nginx -t` on the written config; True when --check-only ends `serve` here
    (having said so), for the tree and the edge alike."""
    from withcache import nginx

    nginx.check(conf)
    if args.check_only:
        print(f"{conf}: ok")
    return bool(args.check_only)


def cmd_nginx_config(args: argparse.Namespace) -> int:
    """Print a server block to include in a system nginx (/etc/nginx/conf.d/).

    It names the access log the watcher must follow. Check the result with
    `nginx -t` before reloading. --tls-cert/--tls-key add https listeners
    (--tls-listen, default 8443) serving the same tree.

    example:
      withcache nginx-config --data /srv/withcache --listen 80 \\
          > /etc/nginx/conf.d/withcache.conf && nginx -t && systemctl reload nginx
    """
    from withcache import edge, nginx

    if args.edge:
        es = edge_settings(args)
        text = edge.render_standalone(es) if args.standalone else edge.render_snippet(es)
        sys.stdout.write(text)
        return 0
    s = settings(args)
    nginx.write_artifact_headers(s.layout)  # the config includes it: it must exist
    text = nginx.render_standalone(s) if args.standalone else nginx.render_server_block(s)
    sys.stdout.write(text)
    return 0


def edge_settings(args: argparse.Namespace, user: str | None = None) -> edge.EdgeSettings:
    from withcache import edge

    if args.aio_threads:
        raise UsageError("--aio-threads is for serving a tree; an edge reads its cache")
    return edge.EdgeSettings(
        layout=layout(args),
        centers=tuple(edge.parse_center(u) for u in args.edge),
        listen=tuple(args.listen or ["8080"]),
        user=user,
        error_log="stderr",
        max_size=args.max_size,
        min_free=args.min_free,
        slice=args.slice,
    )


def _serve_edge(args: argparse.Namespace) -> int:
    """`serve --edge`: nginx's proxy_cache in front of the center, in the foreground."""
    from withcache import edge, nginx

    user = (args.user or nginx.default_user()) if os.geteuid() == 0 else None
    es = edge_settings(args, user)
    conf = edge.write_config(es)
    if _checked_only(conf, args):
        return 0
    print(
        f"withcache: edge cache of {es.centers[0].url} on {', '.join(es.listen)}; "
        f"cache {es.cache.resolve()} (at most {es.max_size}); "
        f"access log {es.layout.access_log.resolve()}",
        file=sys.stderr,
    )
    sys.stderr.flush()
    nginx.exec_foreground(conf)
    return 0  # not reached
