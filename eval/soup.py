"""Model soups over detector ingredients (Wortsman et al., "Model soups", ICML 2022, arXiv:2203.05482).

- ``uniform``: the mean of all ingredients' weights.
- ``greedy``: rank ingredients by their held-out score, start from the best, and add each next one only if
  the soup's held-out score improves (``tie_rule=drop``, model-soups' strict ``>``) or does not get worse
  (``tie_rule=keep``). Held-out = the ``val`` split of a source-domain dataset, never a test split.

Averaging is mergekit's ``linear`` method run in process (``merge_state_dicts``), folded one ingredient at a
time (soup_k = linear(soup_{k-1} with weight k-1, x_k with weight 1)), so only two models are ever in memory.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mergekit_clip.metrics import VideoAggregate, require_selection_metric

if TYPE_CHECKING:
    import torch

# torch and the detector io are imported where used: clip-eval builds its options from SoupConfig at start-up


class SoupConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["uniform", "greedy"] = Field(description="uniform average, or greedy held-out selection")
    metric: str = Field(
        "frame_auc", description="held-out score that ranks and admits ingredients (a higher-is-better registry metric)"
    )
    tie_rule: Literal["keep", "drop"] = Field(
        "drop", description="greedy: keep an ingredient whose soup ties the best score, or drop it"
    )
    val_dataset: str | None = Field(None, description="dataset whose val split is the held-out data")
    val_split: str = Field("val", description="held-out split; 'test' is refused")
    video_aggregate: VideoAggregate = Field(
        "mean", description="how a video's frame P(fake) are pooled for video-level metrics"
    )  # clip-eval score's --video-aggregate: the same choices, default and help
    threshold_val: str | None = Field(
        None,
        description="choose the soup's threshold on DATASET's val split (source domain); recorded in its provenance",
    )

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        return require_selection_metric(value, "soup metric")

    @model_validator(mode="after")
    def _check(self) -> SoupConfig:
        if self.method == "greedy" and not self.val_dataset:
            raise ValueError("a greedy soup needs held-out data: give --val DATASET")
        if self.val_split == "test":
            raise ValueError("val_split 'test': soup selection must never use a test split")
        return self


SOUP_CLI_FIELDS = ("video_aggregate", "threshold_val")  # the fields clip-eval soup takes from click_options


def check_ingredients(dirs: Sequence[str | os.PathLike]) -> None:
    """The merge path's input checks, before any work: every ingredient shares one detector spec (geometry,
    head form and label order, adapter, preprocessing) and holds only finite weights (NaN/Inf is refused,
    naming the ingredient and tensor); shapes and missing tensors are checked as each is loaded."""
    from mergekit_clip.detector.io import DetectorFormatError, check_finite_weights, detector_spec

    if not dirs:
        raise ValueError("a soup needs at least one ingredient")
    first = detector_spec(dirs[0])
    if first.head is None:
        raise DetectorFormatError(f"{dirs[0]} has no forensic head: a soup needs detectors")
    for d in dirs[1:]:
        spec = detector_spec(d)
        if spec != first:
            diff = [k for k in type(first).model_fields if getattr(spec, k) != getattr(first, k)]
            raise DetectorFormatError(f"{d} does not match {dirs[0]} ({', '.join(diff)} differ); cannot average them")
    for d in dirs:  # the merge path's check: one NaN/Inf ingredient would poison the whole soup
        check_finite_weights(d)


def linear_fold(soup: dict[str, torch.Tensor] | None, count: int, new: dict[str, torch.Tensor]) -> dict:
    """Uniform average of ``count`` models (``soup``) and one more, with mergekit's linear method."""
    import torch
    from mergekit.merge_methods import merge_state_dicts

    if soup is None:
        return {k: v.detach().clone() for k, v in new.items()}
    return merge_state_dicts(
        [soup, new], "linear", parameters={"weight": [float(count), 1.0], "normalize": True}, dtype=torch.float32
    )


def build_soup(dirs: Sequence[str | os.PathLike], members: Sequence[int]):
    """A detector whose weights are the uniform average of ``dirs[i] for i in members``."""
    from mergekit_clip.detector.io import load_detector

    soup, model = None, None
    for count, i in enumerate(members):
        model = load_detector(dirs[i])
        soup = linear_fold(soup, count, model.state_dict())
    expected = model.state_dict()
    model.load_state_dict({k: soup[k].to(v.dtype) for k, v in expected.items()})
    return model.eval()


class IncrementalSoup:
    """Uniform soups of growing member lists, reusing the last accepted soup instead of re-averaging from scratch."""

    def __init__(self, dirs: Sequence[str | os.PathLike]):
        self.dirs = list(dirs)
        self.members: list[int] = []
        self.state: dict[str, torch.Tensor] | None = None

    def candidate(self, members: Sequence[int]):
        """The soup of ``members``; call :meth:`accept` with the same list to make it the new base."""
        from mergekit_clip.detector.io import load_detector

        members = list(members)
        if members[:-1] != self.members:
            return build_soup(self.dirs, members), None
        model = load_detector(self.dirs[members[-1]])
        state = linear_fold(self.state, len(self.members), model.state_dict())
        model.load_state_dict({k: state[k].to(v.dtype) for k, v in model.state_dict().items()})
        return model.eval(), state

    def accept(self, members: Sequence[int], state: dict[str, torch.Tensor] | None) -> None:
        if state is None:
            state = build_soup(self.dirs, members).state_dict()
        self.members, self.state = list(members), state


def greedy_select(
    names: Sequence[str],
    individual: Sequence[float],
    soup_score: Callable[[list[int]], float],
    tie_rule: Literal["keep", "drop"] = "drop",
    on_keep: Callable[[list[int]], None] | None = None,
) -> tuple[list[int], list[dict[str, Any]]]:
    """model-soups' greedy recipe; returns the kept indices and the selection log (one entry per candidate).

    ``soup_score(members)`` is the held-out score of the uniform soup of ``members``. Ingredients are ranked
    by ``individual`` score (descending, ties in input order); a NaN score ranks last. ``on_keep(members)``
    is told each accepted member list (the first one included).
    """
    if not names:
        raise ValueError("a greedy soup needs at least one ingredient")
    order = sorted(range(len(names)), key=lambda i: (-(individual[i] if individual[i] == individual[i] else -1e9), i))
    kept = [order[0]]
    best = individual[order[0]]
    log = [{"ingredient": names[order[0]], "individual": individual[order[0]], "soup_score": best, "kept": True}]
    if on_keep is not None:
        on_keep(list(kept))
    for i in order[1:]:
        score = soup_score([*kept, i])
        better = score > best or (tie_rule == "keep" and score == best)
        if better:
            kept.append(i)
            best = score
            if on_keep is not None:
                on_keep(list(kept))
        log.append({"ingredient": names[i], "individual": individual[i], "soup_score": score, "kept": better})
    return kept, log


def make_soup_model(
    dirs: Sequence[str | os.PathLike],
    names: Sequence[str],
    method: Literal["uniform", "greedy"],
    individual: Sequence[float] | None,
    score: Callable[[Any], float] | None,
    tie_rule: Literal["keep", "drop"] = "drop",
):
    """The soup of ``dirs``: ``uniform`` averages all of them; ``greedy`` runs :func:`greedy_select` over uniform
    soups built incrementally, ``score(model)`` being a soup's held-out score and ``individual`` the ingredients'.
    Returns ``(model, member indices, selection log)`` (the log is empty for a uniform soup)."""
    if method == "uniform":
        members = list(range(len(dirs)))
        return build_soup(dirs, members), members, []
    inc = IncrementalSoup(dirs)
    pending: dict[tuple[int, ...], Any] = {}

    def soup_score(members: list[int]) -> float:
        candidate, state = inc.candidate(members)
        pending[tuple(members)] = state
        return score(candidate)

    def on_keep(members: list[int]) -> None:
        inc.accept(members, pending.pop(tuple(members), None))

    members, log = greedy_select(list(names), list(individual), soup_score, tie_rule, on_keep)
    return build_soup(dirs, members), members, log


def write_soup(model, out: str | os.PathLike, provenance: dict[str, Any], overwrite: bool = False) -> Path:
    from mergekit_clip.detector.io import save_detector

    return save_detector(model, out, provenance=provenance, overwrite=overwrite)
