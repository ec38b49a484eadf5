"""YAML configuration files: the one ``--set key=value`` syntax and the one way of reporting their errors.

Shared by ``clip-train`` (:mod:`train.config`) and ``clip-study`` (:mod:`study.config`): a dotted key addresses a
nested value (``optim.lr=3e-4``, ``merges.ties.grid.density=[0.3,0.7]``), the value is parsed as YAML, and a
pydantic validation error becomes one line per problem led by its key, an unknown key naming the closest valid one.
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Callable
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

ModelAt = Callable[[tuple], "type[BaseModel] | None"]  # the model holding the key at a location (None: unknown)


def suggest(key: str, choices: list[str]) -> str:
    """``did you mean 'grid'? valid keys: ...`` for a mistyped ``key``."""
    close = difflib.get_close_matches(key, choices, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{hint}valid keys: {', '.join(sorted(choices))}"


def parse_override(item: str, error: type[Exception] = ValueError) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], parsed value); values are YAML scalars or flow lists (``[1e-4, 3e-4]``)."""
    if "=" not in item:
        raise error(f"--set {item!r}: expected key=value")
    key, raw = item.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise error(f"--set {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise error(f"--set {item!r}: cannot parse value ({e})") from e
    return path, value


def apply_overrides(
    raw: dict, overrides: list[str], *, model_at: ModelAt | None = None, error: type[Exception] = ValueError
) -> dict:
    """A copy of ``raw`` with each ``--set`` item applied (key order kept). With ``model_at``, a key the schema does
    not know is refused at once, naming the closest valid one; without, validation names it later."""
    out = copy.deepcopy(raw)
    for item in overrides:
        path, value = parse_override(item, error)
        node = out
        for depth, part in enumerate(path):
            model = model_at(tuple(path[:depth])) if model_at is not None else None
            if model is not None and part not in model.model_fields:
                where = ".".join(path[: depth + 1])
                raise error(f"--set {item!r}: unknown key {where!r}: {suggest(part, list(model.model_fields))}")
            if depth == len(path) - 1:
                node[part] = value
            else:
                child = node.get(part)
                node[part] = dict(child) if isinstance(child, dict) else {}
                node = node[part]
    return out


def format_validation_errors(error: ValidationError, source: str, what: str, owner_at: ModelAt) -> str:
    """One line per problem, led by its key; an unknown key names the closest valid one (``owner_at(loc)``: the
    pydantic model that holds the key at ``loc``)."""
    lines = []
    for err in error.errors():
        loc = tuple(err["loc"])
        key = ".".join(map(str, loc))
        if err["type"] == "extra_forbidden":
            owner = owner_at(loc[:-1])
            choices = list(owner.model_fields) if owner else []
            lines.append(f"unknown key {key!r}: {suggest(str(loc[-1]), choices)}")
        else:
            lines.append(f"{key or '<root>'}: {err['msg']}{_offending(err)}")
    return f"{source}: invalid {what}\n  " + "\n  ".join(lines)


def _offending(err: dict) -> str:
    """`` (got 'q_prj'; did you mean 'q_proj'?)``: the value refused, and the closest choice of a closed set."""
    value = err.get("input")
    if not isinstance(value, (str, int, float, bool)) or err["type"] == "missing":
        return ""
    shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
    hint = ""
    if err["type"] == "literal_error" and isinstance(value, str):
        choices = re.findall(r"'([^']*)'", str((err.get("ctx") or {}).get("expected", "")))
        close = difflib.get_close_matches(value, choices, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
    return f" (got {shown}{hint})"
