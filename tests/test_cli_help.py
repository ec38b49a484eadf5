"""``-h`` and ``--help`` work on every command and sub-command of every console script (exit 0, usage shown),
and on every ``python -m benchmarks.X``.

The scripts are read from pyproject.toml and the benchmarks from the folder, so a new one is covered without
editing this file.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import click
import pytest
import tomllib
from click.testing import CliRunner

ROOT = Path(__file__).parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
BENCHMARKS = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if not p.stem.startswith("_"))  # _x: helpers


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


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_help_flag(name, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(ROOT))
    main = importlib.import_module(f"benchmarks.{name}").main
    for flag in ("-h", "--help"):
        if isinstance(main, click.Command):
            result = CliRunner().invoke(main, [flag], prog_name=f"python -m benchmarks.{name}")
            code, output = result.exit_code, result.output
        else:  # argparse: help is printed by parse_args, which exits
            monkeypatch.setattr(sys, "argv", [f"{name}.py", flag])
            with pytest.raises(SystemExit) as exit_info:
                main()
            code, output = exit_info.value.code, capsys.readouterr().out
        assert code == 0, f"{name} {flag}: {output}"
        assert output.lower().startswith("usage: "), f"{name} {flag}: {output[:200]}"
