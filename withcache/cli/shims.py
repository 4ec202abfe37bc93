"""install-shims: put curlwithcache/wgetwithcache (and optionally curl/wget) on PATH."""

from __future__ import annotations

import argparse
from pathlib import Path

from withcache.cli.common import Subparsers, command
from withcache.errors import UsageError

# the commands register() adds
COMMANDS = ("install-shims",)


def register(sub: Subparsers, parent: argparse.ArgumentParser) -> None:
    p = command(sub, parent, "install-shims", cmd_install_shims)
    p.add_argument(
        "dir",
        nargs="?",
        type=Path,
        default=Path.home() / ".local" / "share" / "withcache" / "bin",
        metavar="DIR",
        help="where to install (default: ~/.local/share/withcache/bin, a directory of its "
        "own so that putting it first on PATH shadows only curl and wget)",
    )
    p.add_argument(
        "--shadow",
        action="store_true",
        help="also install curl and wget links to the shims: put DIR first on PATH and "
        "every script uses the cache unchanged",
    )


def cmd_install_shims(args: argparse.Namespace) -> int:
    """Install the curl/wget shims (POSIX sh, no Python needed to run them).

    They do nothing until WITHCACHE_SERVER is set; then a URL the cache holds is
    fetched from it, anything else from its origin, with arguments untouched.

    example:
      withcache install-shims --shadow ~/.local/share/withcache/bin
      export PATH="$HOME/.local/share/withcache/bin:$PATH"
      export WITHCACHE_SERVER=http://cache-host:8080
      curl -fLO https://vendor.example/cuda_12.6.3_linux.run   # from the cache if held
    """
    from withcache.shims import install_shims  # imported when it runs

    try:
        written = install_shims(args.dir, args.shadow)
    except FileExistsError as exc:
        raise UsageError(str(exc)) from exc
    if not args.quiet:
        for path in written:
            print(path)
    return 0
