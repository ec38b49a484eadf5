"""Read a ``clip-train`` family folder and pick ingredients from it (by mode, lr, seed, dataset, name).

A family folder is what ``clip-train`` writes (``train/sweep.py``): ``summary.json`` lists the ingredients with
their sweep point, ``ingredients/<name>/`` holds each detector and ``base/`` the shared start. This module reads
only those files, so it works on a family copied from a cluster and never imports the trainer.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# selection key -> summary.json field
SELECT_KEYS = {
    "name": "name",
    "mode": "mode",
    "lr": "lr",
    "seed": "seed",
    "dataset": "train_dataset",
    "weight_decay": "weight_decay",
    "augment_strength": "augment_strength",
}


class FamilyError(ValueError):
    """A family folder that cannot be read, or a selection that matches nothing (the message says why)."""


@dataclass(frozen=True)
class Ingredient:
    name: str
    path: Path
    mode: str | None
    seed: int | None
    lr: float | None
    weight_decay: float | None
    augment_strength: float | None
    train_dataset: str | None  # a pooled list is joined with "+"
    heldout: Mapping[str, Any] | None

    def field(self, key: str) -> Any:
        return getattr(self, SELECT_KEYS[key])


@dataclass(frozen=True)
class Family:
    root: Path
    base: Path
    ingredients: tuple[Ingredient, ...]

    def names(self) -> list[str]:
        return [i.name for i in self.ingredients]


def _dataset_label(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else "+".join(map(str, value))


def load_family(root: str | os.PathLike) -> Family:
    """The ingredients listed in ``ROOT/summary.json`` (paths taken under ``ROOT``, so a moved family works)."""
    root = Path(root)
    summary = root / "summary.json"
    if not summary.is_file():
        raise FamilyError(f"{summary} not found: {root} is not a finished clip-train family (run clip-train first)")
    from mergekit_clip.structured import StructuredFileError, read_json

    try:
        rows = read_json(summary)
    except (OSError, StructuredFileError) as e:
        raise FamilyError(f"{summary}: cannot read ({e})") from e
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "name" in r for r in rows):
        raise FamilyError(f"{summary}: expected a list of ingredient rows with a 'name'")
    for row in rows:  # a name is a folder under ingredients/: never a path that leaves it
        name = row["name"]
        if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name:
            raise FamilyError(f"{summary}: ingredient name {name!r} is not a plain folder name")
    base = root / "base"
    if not (base / "config.json").is_file():
        raise FamilyError(f"{base}: the family's shared base is missing (expected a detector dir)")
    ingredients = []
    for row in rows:
        path = root / "ingredients" / row["name"]
        if not (path / "config.json").is_file():
            raise FamilyError(f"{summary} lists {row['name']!r} but {path} holds no detector")
        ingredients.append(
            Ingredient(
                name=row["name"],
                path=path,
                mode=row.get("mode"),
                seed=row.get("seed"),
                lr=row.get("lr"),
                weight_decay=row.get("weight_decay"),
                augment_strength=row.get("augment_strength"),
                train_dataset=_dataset_label(row.get("train_dataset")),
                heldout=row.get("heldout"),
            )
        )
    return Family(root=root, base=base, ingredients=tuple(ingredients))


def parse_selectors(items: Sequence[str]) -> dict[str, list[Any]]:
    """``["mode=full_finetune", "lr=1e-3", "lr=3e-4"]`` -> ``{"mode": [...], "lr": [1e-3, 3e-4]}`` (repeats = or)."""
    import yaml

    out: dict[str, list[Any]] = {}
    for item in items:
        if "=" not in item:
            raise FamilyError(f"--select {item!r}: expected key=value with key one of {sorted(SELECT_KEYS)}")
        key, raw = (s.strip() for s in item.split("=", 1))
        value = yaml.safe_load(raw) if raw else None
        out.setdefault(key, []).extend(value if isinstance(value, list) else [value])
    return out


def _number(value: Any) -> float | None:
    """YAML 1.1 reads ``1e-3`` as a string: numbers are compared as floats whichever way they arrive."""
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _matches(actual: Any, wanted: Any) -> bool:
    a, w = _number(actual), _number(wanted)
    if a is not None and w is not None and not isinstance(actual, str):
        return math.isclose(a, w, rel_tol=1e-9, abs_tol=0.0)
    return str(actual) == str(wanted)


def _suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f"did you mean {close[0]!r}? " if close else ""


def select_ingredients(family: Family, selectors: Mapping[str, Any] | None) -> list[Ingredient]:
    """Ingredients matching every key (a list of values = any of them); no selector = all, in summary order."""
    chosen = list(family.ingredients)
    for key, wanted in (selectors or {}).items():
        if key not in SELECT_KEYS:
            raise FamilyError(f"unknown selection key {key!r}: {_suggest(key, list(SELECT_KEYS))}"
                              f"choose from {sorted(SELECT_KEYS)}")  # fmt: skip
        values = list(wanted) if isinstance(wanted, (list, tuple)) else [wanted]
        present = sorted({str(i.field(key)) for i in family.ingredients})
        for value in values:
            if not any(_matches(i.field(key), value) for i in family.ingredients):
                raise FamilyError(
                    f"select {key}={value!r}: no ingredient of {family.root} has it; "
                    f"{_suggest(str(value), present)}values present: {present}"
                )
        chosen = [i for i in chosen if any(_matches(i.field(key), v) for v in values)]
    if not chosen:
        raise FamilyError(f"the selection {dict(selectors or {})} matches no ingredient of {family.root} together")
    return chosen
