"""The command line's own plumbing: only the named command is registered, and that
changes nothing a user sees."""

from __future__ import annotations

import argparse
import contextlib
import io
from types import ModuleType

import pytest

from withcache.cli import COMMAND_MODULES, build_parser, named_command
from withcache.cli.common import common_parent


@pytest.mark.parametrize("module", COMMAND_MODULES, ids=lambda m: m.__name__)
def test_each_module_declares_exactly_the_commands_it_registers(
    module: ModuleType,
) -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    module.register(sub, common_parent())
    assert set(sub.choices) == set(module.COMMANDS)


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["sync", "-j", "4"], "sync"),
        (["-v", "--data", "sync", "key", "https://x/y"], "key"),  # --data's value is no command
        (["--data=/srv/wc", "-q", "index"], "index"),
        (["--traceback", "nginx-config", "--standalone"], "nginx-config"),
        (["--help"], None),
        (["--version"], None),
        ([], None),
        (["synk"], None),  # a typo: the whole parser names the choices
    ],
)
def test_the_command_is_read_from_argv(argv: list[str], command: str | None) -> None:
    assert named_command(argv) == command


def help_text(parser: argparse.ArgumentParser, argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        parser.parse_args(argv)
    return out.getvalue()


@pytest.mark.parametrize("command", [c for m in COMMAND_MODULES for c in m.COMMANDS])
def test_a_command_alone_parses_and_helps_as_in_the_whole_cli(command: str) -> None:
    alone, whole = build_parser(command), build_parser()
    assert help_text(alone, [command, "--help"]) == help_text(whole, [command, "--help"])


def test_a_typo_still_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser(named_command(["synk"])).parse_args(["synk"])
    err = capsys.readouterr().err
    assert "invalid choice: 'synk'" in err and "serve" in err and "sync" in err
