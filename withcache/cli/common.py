"""Options every command shares, and the help formatting that keeps examples intact."""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from withcache.fmt import parse_size
from withcache.layout import Layout, default_data_dir

Subparsers = Any  # argparse's _SubParsersAction is private
DEFAULT_MANIFESTS = Path("manifests")
DEFAULT_ADD_FILE = DEFAULT_MANIFESTS / "added.yaml"  # where `withcache add` appends


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keep the docstring's layout (examples) and show defaults."""


def add_common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """--data/-v/-q/--traceback, at the top level and after the command name alike."""
    default: Any = None if top else argparse.SUPPRESS
    parser.add_argument(
        "--data",
        type=Path,
        default=default,
        metavar="DIR",
        help="data dir (default: $WITHCACHE_DATA or ./data)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", default=default or False)
    parser.add_argument("-q", "--quiet", action="store_true", default=default or False)
    parser.add_argument(
        "--traceback",
        action="store_true",
        default=default or False,
        help="show a traceback on errors",
    )


def common_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    add_common(parent, top=False)
    return parent


def command(
    sub: Subparsers,
    parent: argparse.ArgumentParser,
    name: str,
    func: Callable[[argparse.Namespace], int | None],
) -> argparse.ArgumentParser:
    """A subcommand whose help is the function's docstring (first line as summary)."""
    doc = inspect.cleandoc(func.__doc__ or "")
    summary = doc.splitlines()[0] if doc else ""
    p: argparse.ArgumentParser = sub.add_parser(
        name, help=summary, description=doc, formatter_class=HelpFormatter, parents=[parent]
    )
    p.set_defaults(func=func)
    return p


def layout(args: argparse.Namespace) -> Layout:
    return Layout(args.data or default_data_dir())


def manifests_option(p: argparse.ArgumentParser, help_text: str, dest: str = "manifests") -> None:
    """-m/--manifests PATH, repeatable; unset means manifests/ (see manifest_paths)."""
    p.add_argument(
        "-m",
        "--manifests",
        dest=dest,
        action="append",
        type=Path,
        metavar="PATH",
        help=f"{help_text} (repeatable; default: manifests/)",
    )


def manifest_paths(given: list[Path] | None) -> list[Path]:
    return list(given or [DEFAULT_MANIFESTS])


def size_arg(text: str) -> int:
    """argparse type for sizes: 4096, 500M, 64G (binary units)."""
    try:
        n = parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be more than 0")
    return n
