"""Honest selection: the candidate picked per group reads source-domain validation scores and nothing else.

:func:`select_on_val` receives only val scores (a mapping model -> dataset -> :class:`SplitScores`); it cannot
see a test split because none is handed to it. The oracle (best on test) is computed elsewhere
(:mod:`study.report`) and only ever shown beside it, never in its place.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from study.scores import SplitScores, metric_value

INGREDIENTS = "ingredients"
ALL_SOUPS = "any soup"
ALL_MERGES = "any merge"


@dataclass(frozen=True)
class Entry:
    """A model of the study: an ingredient, a soup or a merge candidate."""

    name: str
    kind: str  # ingredient | soup | merge
    group: str  # "ingredients", the soup's name, or the merge group
    path: Path
    model_hash: str  # study.hashing.FileHashes.model: weights + detector spec
    method: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    searched: tuple[str, ...] = ()
    family: str | None = None  # the ingredient family it is (or is made from)


@dataclass(frozen=True)
class Selection:
    metric: str
    val_scores: dict[str, float]  # model -> selection metric on source val
    selected: dict[str, str]  # group -> model picked on val (groups include ALL_SOUPS / ALL_MERGES)
    members: dict[str, list[str]]  # group -> its models, in study order
    tie_break: str | None = None  # registered frame metric that orders models tied on ``metric``
    tie_scores: dict[str, float] = field(default_factory=dict)  # model -> tie_break on source val
    family_reference: dict[str, str] = field(default_factory=dict)  # family -> its val-selected ingredient
    family_merge: dict[str, str] = field(default_factory=dict)  # family -> its val-selected merge or soup
    protocol: str = "source_val"  # the selection protocol whose scores these are (study.protocols)

    @property
    def reference(self) -> str:
        """The val-selected ingredient: what a user without merging would ship."""
        return self.selected[INGREDIENTS]


def groups_of(entries: Sequence[Entry]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for e in entries:
        groups.setdefault(e.group, []).append(e.name)
    for kind, label in (("soup", ALL_SOUPS), ("merge", ALL_MERGES)):
        names = [e.name for e in entries if e.kind == kind]
        if len({e.group for e in entries if e.kind == kind}) > 1:
            groups[label] = names
    return groups


def _higher_first(value: float) -> float:
    return -(value if not math.isnan(value) else -math.inf)  # NaN ranks last


def best(names: Sequence[str], score: Mapping[str, float], tie: Mapping[str, float] | None = None) -> str:
    """Highest score; NaN ranks last; equal scores go to the higher ``tie`` value (when given), then to the first
    listed (study order), so selection is stable."""
    def rank(i: int) -> tuple[float, float, int]:
        name = names[i]
        return (_higher_first(score[name]), _higher_first(tie[name]) if tie is not None else 0.0, i)

    return names[min(range(len(names)), key=rank)]


def tie_break_value(scores: Mapping[str, SplitScores], metric: str) -> float:
    """The mean over source datasets of a registered frame metric, signed so that higher is better."""
    from mergekit_clip.metrics import get_metric

    spec = get_metric(metric)
    values = [spec.function(s.labels, s.scores) for s in scores.values()]
    value = float(np.mean(values)) if values else math.nan
    return value if spec.higher_is_better else -value


def select_on_val(
    val: Mapping[str, Mapping[str, SplitScores]], entries: Sequence[Entry], metric: str, tie_break: str | None = None
) -> Selection:
    """Per group, the model with the best ``metric`` (mean over source datasets) on the val split; models tied on
    it (a saturated val AUC of 1.0 is common in-domain) are ordered by ``tie_break`` on the same val frames."""
    missing = [e.name for e in entries if e.name not in val]
    if missing:
        raise ValueError(f"no val scores for {missing[:3]}: selection needs every model scored on val")
    scores = {e.name: metric_value(val[e.name], metric) for e in entries}
    ties = {e.name: tie_break_value(val[e.name], tie_break) for e in entries} if tie_break else None
    return select_by_scores(entries, scores, ties, metric, tie_break)


def select_by_scores(
    entries: Sequence[Entry], scores: Mapping[str, float], ties: Mapping[str, float] | None, metric: str,
    tie_break: str | None = None, protocol: str = "source_val",
) -> Selection:
    """Per group (and per family), the model with the highest proxy score of a selection protocol; equal scores
    go to the higher ``ties`` value, then to study order. Scores are higher-is-better; NaN ranks last."""
    scores = {e.name: float(scores[e.name]) for e in entries}
    groups = groups_of(entries)
    if INGREDIENTS not in groups:
        raise ValueError("the study has no ingredients to compare merges against")
    selected = {group: best(names, scores, ties) for group, names in groups.items()}
    families: dict[str, list[str]] = {}
    made_from: dict[str, list[str]] = {}  # family -> the merges and soups built from it
    for e in entries:
        if e.family is not None:
            (families if e.kind == "ingredient" else made_from).setdefault(e.family, []).append(e.name)
    family_reference = {family: best(names, scores, ties) for family, names in families.items()}
    family_merge = {family: best(names, scores, ties) for family, names in made_from.items()}
    return Selection(metric=metric, val_scores=scores, selected=selected, members=groups, tie_break=tie_break,
                     tie_scores=dict(ties or {}), family_reference=family_reference,
                     family_merge=family_merge, protocol=protocol)  # fmt: skip
