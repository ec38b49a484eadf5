"""Options generated from pydantic models: names, types, choices, defaults and validation come from the model."""

from __future__ import annotations

import typing
from pathlib import Path

import click
from click.testing import CliRunner
from pydantic import BaseModel, Field

from mergekit_clip.data.deepfakebench import COMPRESSION_LEVELS
from mergekit_clip.options import Compression, DataOptions, RunOptions, click_options, options_from, uses_bf16


class Demo(BaseModel):
    batch_size: int = Field(8, gt=0, description="frames per batch")
    kind: typing.Literal["a", "b"] = Field("a", description="which kind")
    strict: bool = Field(False, description="refuse more")
    check: bool = Field(True, description="check first")
    names: tuple[str, ...] = Field((), description="some names")
    root: Path | None = Field(None, description="a folder")


def _command(model):
    @click.command()
    @click_options(model)
    def cmd(**kwargs):
        click.echo(repr(options_from(model, kwargs)))

    return cmd


def test_flags_are_field_names_in_kebab_case_with_model_defaults(tmp_path):
    out = CliRunner().invoke(_command(Demo), []).output
    assert out.strip() == repr(Demo())
    args = ["--batch-size", "3", "--kind", "b", "--strict", "--no-check", "--names", "x, y", "--root", str(tmp_path)]
    result = CliRunner().invoke(_command(Demo), args)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == repr(Demo(batch_size=3, kind="b", strict=True, check=False, names=("x", "y"),
                                              root=tmp_path))  # fmt: skip


def test_model_validation_is_a_usage_error_naming_the_flag():
    result = CliRunner().invoke(_command(Demo), ["--batch-size", "0"])
    assert result.exit_code == 2
    assert "--batch-size: Input should be greater than 0" in result.output


def test_literal_is_a_closed_choice_and_paths_must_exist(tmp_path):
    result = CliRunner().invoke(_command(Demo), ["--kind", "c"])
    assert result.exit_code == 2 and "'c' is not one of 'a', 'b'" in result.output
    result = CliRunner().invoke(_command(Demo), ["--root", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_shared_models_match_the_data_layer_and_training_config():
    from train.config import DataConfig, TrainConfig

    assert typing.get_args(Compression) == COMPRESSION_LEVELS
    shared_data = set(DataOptions.model_fields) - {"allow_outside_root"}
    assert shared_data <= set(DataConfig.model_fields)  # one name per concept: --json-root = data.json_root ...
    assert {"device", "precision"} <= set(TrainConfig.model_fields)
    assert "workers" in DataConfig.model_fields and "workers" in RunOptions.model_fields


def test_precision_resolution():
    assert uses_bf16("auto", "cuda:1") and not uses_bf16("auto", "cpu")
    assert uses_bf16("bf16", "cpu") and not uses_bf16("fp32", "cuda")


def test_required_fields_are_required():
    result = CliRunner().invoke(_command(DataOptions), [])
    assert result.exit_code == 2 and "--json-root" in result.output
