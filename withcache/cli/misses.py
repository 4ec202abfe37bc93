"""watch, misses, report, add: the review loop."""

from __future__ import annotations

import argparse

from withcache.cli.common import Subparsers


def register(sub: Subparsers, parent: argparse.ArgumentParser) -> None:
    return None
