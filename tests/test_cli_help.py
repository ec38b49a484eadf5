"""``-h`` and ``--help`` work on every command and sub-command of every console script (exit 0, usage shown).

The scripts are read from pyproject.toml, so a new console script is covered without editing this file.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import click
import pytest
import tomllib
from click.testing import CliRunner

SCRIPTS = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["scripts"]


def _entry_point(target: str) -> click.Command:
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def _walk(command: click.Command, path: tuple[str, ...] = ()):
    yield path
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            yield from _walk(command.get_command(ctx, name), (*path, name))


CASES = [(script, path) for script, target in SCRIPTS.items() for path in _walk(_entry_point(target))]


@pytest.mark.parametrize(("script", "path"), CASES, ids=[" ".join((s, *p)) for s, p in CASES])
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_flag(script, path, flag):
    result = CliRunner().invoke(_entry_point(SCRIPTS[script]), [*path, flag])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: ")
    assert " ".join(path) in result.output.splitlines()[0]


def test_every_script_is_a_click_command():
    assert {"mergekit-clip", "clip-train", "clip-eval"} <= set(SCRIPTS)
    assert all(isinstance(_entry_point(t), click.Command) for t in SCRIPTS.values())
