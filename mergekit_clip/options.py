"""Command-line options generated from the pydantic models that hold the settings (as mergekit's ``options.py`` does).

One model per concern, shared by every command that has the concern, so one concept has one flag everywhere and
the flag is the field name in kebab-case (``workers`` -> ``--workers``), with the field's description as help::

    @click.command()
    @click_options(RunOptions)
    def score(**kwargs):
        run = options_from(RunOptions, kwargs)   # validated; a bad value is a usage error naming the flag

Literal fields become ``click.Choice``; ``bool`` fields flags (``--x/--no-x`` when the default is True); tuple
fields accept a comma-separated value; paths must exist when the field says so. Validation happens once, in the
model, so the CLI and the YAML configs refuse the same values with the same message.
"""

from __future__ import annotations

import functools
import os
import typing
from collections.abc import Callable, Iterable
from pathlib import Path

import click
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo

Precision = typing.Literal["auto", "fp32", "bf16"]
Compression = typing.Literal["raw", "c23", "c40"]  # mergekit_clip.data.deepfakebench.COMPRESSION_LEVELS


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RunOptions(_Options):
    """Where and how models run: the same names as ``clip-train``'s config keys (``device``, ``precision``...)."""

    device: str = Field("auto", description="auto (cuda when available), cpu, cuda or cuda:N")
    precision: Precision = Field(
        "auto", description="auto = bf16 on CUDA, fp32 on CPU; bf16 = autocast on CUDA, bf16 weights on CPU"
    )
    batch_size: int = Field(64, gt=0, description="frames per forward pass")
    workers: int | None = Field(None, ge=0, description="frame-decoding DataLoader workers (default: by CPU count)")


JSON_ROOT_HELP = "folder holding one file per dataset in any registered format (<Name>.json, <Name>.csv)"

class DataOptions(_Options):
    """Which frames a command reads: the same names as ``clip-train``'s ``data.*`` keys."""

    json_root: Path = Field(description=JSON_ROOT_HELP)
    data_root: Path = Field(description="root the relative frame paths resolve against")
    frame_num: int | None = Field(None, gt=0, description="frames per video, evenly spaced (default: all)")
    compression: Compression = Field("c23", description="level read where a split nests them (FF++ family)")
    allow_outside_root: bool = Field(
        False, description="accept frame paths that are absolute or climb out of data_root with '..'"
    )
    follow_symlinks: bool = Field(
        True, description="follow symlinks inside data_root (datasets linked to shared storage); "
        "--no-follow-symlinks refuses a link that resolves outside it"
    )  # fmt: skip


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _inner(annotation):
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return next((a for a in args if a is not type(None)), annotation)
    return annotation


def option_for(name: str, field: FieldInfo, *, default_from_model: bool = True) -> Callable:
    """One click option from a pydantic field; ``default_from_model=False`` leaves unset flags as ``None``."""
    flag = flag_name(name)
    help_text = field.description or ""
    inner = _inner(field.annotation)
    required = field.is_required()
    default = None if (required or not default_from_model) else field.default
    show = default_from_model and default not in (None, False)
    if inner is bool:
        if default_from_model and field.default is False:
            return click.option(flag, name, is_flag=True, default=False, help=help_text)
        return click.option(f"{flag}/--no-{flag[2:]}", name, default=default, show_default=show, help=help_text)
    if typing.get_origin(inner) is typing.Literal:
        choice = click.Choice([str(c) for c in typing.get_args(inner)])
        return click.option(flag, name, type=choice, default=default, required=required, show_default=show,
                            help=help_text)  # fmt: skip
    if inner is Path:
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        kind = click.Path(exists=bool(extra.get("exists", True)), path_type=Path)
        return click.option(flag, name, type=kind, default=default, required=required, help=help_text)
    if typing.get_origin(inner) is tuple:
        help_text = f"{help_text} (comma-separated)"
        return click.option(flag, name, type=str, default=None, required=required, help=help_text)
    click_type = {int: int, float: float, str: str}.get(inner, str)
    return click.option(flag, name, type=click_type, default=default, required=required, show_default=show,
                        help=help_text)  # fmt: skip


class RegistryChoice(click.Choice):
    """A ``click.Choice`` over a registry's names as they are when used (help, validation): an entry registered
    after import is a choice too, and the help lists it."""

    def __init__(self, names: Callable[[], Iterable[str]], case_sensitive: bool = True):
        self._names = names
        super().__init__([], case_sensitive)

    @property
    def choices(self) -> tuple[str, ...]:
        return tuple(self._names())

    @choices.setter
    def choices(self, value) -> None:  # click.Choice.__init__ assigns it; the registry is the source
        pass


def choice_option(
    flag: str, choices: Iterable[str] | Callable[[], Iterable[str]], default: str, help_text: str | None = None
) -> Callable:
    """A closed option outside the option models: ``flag`` takes one of ``choices`` (names, or a callable giving a
    registry's names when used), its default shown in --help."""
    kind = RegistryChoice(choices) if callable(choices) else click.Choice(list(choices))
    return click.option(flag, type=kind, default=default, show_default=True, help=help_text)


def click_options(
    model: type[BaseModel], *, exclude: Iterable[str] = (), default_from_model: bool = True
) -> Callable[[Callable], Callable]:
    """Decorator adding one option per field of ``model`` (in field order), minus ``exclude``."""
    skip = set(exclude)

    def decorate(func: Callable) -> Callable:
        for name, field in reversed(list(model.model_fields.items())):
            if name not in skip:
                func = option_for(name, field, default_from_model=default_from_model)(func)
        return func

    return decorate


M = typing.TypeVar("M", bound=BaseModel)


def options_from(model: type[M], values: dict, *, drop_none: bool = True) -> M:
    """Build ``model`` from click's keyword arguments (only its fields), as a usage error naming the flag if bad."""
    fields = model.model_fields
    picked = {k: v for k, v in values.items() if k in fields and not (drop_none and v is None)}
    for name, value in list(picked.items()):
        if typing.get_origin(_inner(fields[name].annotation)) is tuple and isinstance(value, str):
            picked[name] = tuple(v.strip() for v in value.split(",") if v.strip())
    try:
        return model(**picked)
    except ValidationError as e:
        problems = "; ".join(f"{flag_name(str(err['loc'][0]))}: {err['msg']}" for err in e.errors() if err["loc"])
        raise click.UsageError(problems or str(e)) from e


def output_folder(help_text: str) -> Callable[[Callable], Callable]:
    """The output-folder convention of every command that writes one: ``--out DIR``; where the folder is the
    command's natural last argument it may also be given positionally (``import SRC OUT`` = ``import SRC --out OUT``).
    The command receives ``out`` (a Path); giving neither, or two different folders, is a usage error."""

    def decorate(func: Callable) -> Callable:
        def wrapper(*args, out_arg: Path | None = None, out: Path | None = None, **kwargs):
            if out_arg is not None and out is not None and Path(out_arg) != Path(out):
                raise click.UsageError(f"two output folders given: OUT {out_arg} and --out {out}; give one")
            folder = out if out is not None else out_arg
            if folder is None:
                raise click.UsageError("missing the output folder: give OUT or --out DIR")
            return func(*args, out=Path(folder), **kwargs)

        wrapper = functools.update_wrapper(wrapper, func)
        wrapper = click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=None,
                               help=f"{help_text} (or give it as OUT)")(wrapper)  # fmt: skip
        return click.argument("out_arg", metavar="[OUT]", required=False, type=click.Path(path_type=Path))(wrapper)

    return decorate


CheckImages = typing.Literal["none", "exists", "header", "decode"]
# one default for every command that checks frames: the header read catches missing and truncated files at a
# fraction of a full decode's cost; ``decode`` is the opt-in thorough check
CHECK_IMAGES_DEFAULT: CheckImages = "header"


def resolve_workers(workers: int | None) -> int:
    """``--workers`` as given, or for None one decode worker per spare core, at most 4 (the main process keeps one
    for the forward pass)."""
    return max(0, min(4, (os.cpu_count() or 1) - 1)) if workers is None else workers


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; other values are checked, then kept."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" or device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise click.UsageError(f"--device {device}: torch sees no CUDA device (use cpu or auto)")
        return device
    raise click.UsageError(f"--device {device!r}: choose auto, cpu, cuda or cuda:N")


def uses_bf16(precision: Precision, device: str) -> bool:
    """Whether a run in ``precision`` on ``device`` (already resolved) computes in bf16."""
    return precision == "bf16" or (precision == "auto" and device.startswith("cuda"))
