"""One name per concept: the README table matches the commands and the config models; flags keep one meaning;
the output folder is ``--out`` (or the positional OUT) everywhere it is written."""

from __future__ import annotations

import importlib
import re
import typing
from pathlib import Path

import click
import pytest
import tomllib
from click.testing import CliRunner
from pydantic import BaseModel

from study.config import StudyConfig
from train.config import TrainConfig

ROOT = Path(__file__).parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def _command(words: str) -> click.Command:
    """``"mergekit-clip data synth"`` -> that click command (walking the group)."""
    script, *path = words.split()
    module, attr = SCRIPTS[script].split(":")
    command = getattr(importlib.import_module(module), attr)
    for name in path:
        assert isinstance(command, click.Group), f"{script} {name}: not a group"
        command = command.get_command(click.Context(command), name)
        assert command is not None, f"{words}: no such command"
    return command


def _flags(command: click.Command) -> set[str]:
    return {opt for p in command.params if isinstance(p, click.Option) for opt in (*p.opts, *p.secondary_opts)}


def _all_commands():
    for script in SCRIPTS:
        stack = [(script, _command(script))]
        while stack:
            words, command = stack.pop()
            yield words, command
            if isinstance(command, click.Group):
                for name in command.list_commands(click.Context(command)):
                    stack.append((f"{words} {name}", command.get_command(click.Context(command), name)))


def _table_rows() -> list[list[str]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## One name per concept", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip().strip("|").split("|") for line in section.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row] for row in rows[1:]]  # without the header row


def _has_key(model: type[BaseModel], dotted: str) -> bool:
    for part in dotted.split("."):
        field = model.model_fields.get(part)
        if field is None:
            return False
        inner = [a for a in (field.annotation, *typing.get_args(field.annotation)) if isinstance(a, type)]
        model = next((a for a in inner if issubclass(a, BaseModel)), None)  # type: ignore[assignment]
        if model is None and part != dotted.split(".")[-1]:
            return False
    return True


ROWS = _table_rows()


def test_the_table_has_the_core_concepts():
    concepts = {row[0] for row in ROWS}
    for concept in ("device", "precision", "decode workers", "batch size", "compression", "output folder", "seed"):
        assert concept in concepts


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_table_row_matches_commands_and_configs(row):
    concept, flag_cell, commands_cell, train_key, study_key = row
    flag = re.findall(r"`(--[a-z-]+)`", flag_cell)[0]
    commands = re.findall(r"`([a-z-]+(?: [a-z-]+)*)`", commands_cell)
    assert commands, concept
    for words in commands:
        assert flag in _flags(_command(words)), f"{words} has no {flag} ({concept})"
    for model, cell in ((TrainConfig, train_key), (StudyConfig, study_key)):
        for key in re.findall(r"`([a-z_.]+)`", cell):
            assert _has_key(model, key), f"{model.__name__} has no key {key} ({concept})"


@pytest.mark.parametrize("choice_row", ["precision", "compression"])
def test_closed_sets_are_choices(choice_row):
    row = next(r for r in ROWS if r[0] == choice_row)
    flag, allowed = re.findall(r"`(--[a-z-]+)`", row[1])[0], re.findall(r"`([a-z0-9]+)`", row[1])
    for words in re.findall(r"`([a-z-]+(?: [a-z-]+)*)`", row[2]):
        option = next(p for p in _command(words).params if flag in getattr(p, "opts", ()))
        assert isinstance(option.type, click.Choice) and list(option.type.choices) == allowed, words


def test_retired_flags_are_gone():
    """Old spellings (``--num-workers``, ``--bf16``) and the two-meaning ``--strict`` exist on no command."""
    for words, command in _all_commands():
        flags = _flags(command)
        assert not flags & {"--num-workers", "--bf16", "--strict"}, words


def test_device_defaults_to_auto():
    for words in ("clip-eval score", "clip-eval soup", "mergekit-clip stats"):
        option = next(p for p in _command(words).params if "--device" in getattr(p, "opts", ()))
        assert option.default == "auto", words


@pytest.mark.parametrize("form", ["positional", "option"])
def test_create_takes_out_both_ways(tmp_path, form):
    out = tmp_path / "det"
    where = [str(out)] if form == "positional" else ["--out", str(out)]
    result = CliRunner().invoke(_command("mergekit-clip"), ["create", *where, "--arch", "ViT-B-32", "--no-head"])
    assert result.exit_code == 0, result.output
    assert (out / "config.json").is_file()


def test_two_different_out_folders_are_a_usage_error(tmp_path):
    args = ["create", str(tmp_path / "a"), "--out", str(tmp_path / "b"), "--arch", "ViT-B-32"]
    result = CliRunner().invoke(_command("mergekit-clip"), args)
    assert result.exit_code == 2 and "two output folders" in result.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_missing_out_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(_command("mergekit-clip"), ["data", "synth", "--preset", "small"])
    assert result.exit_code == 2 and "--out" in result.output
