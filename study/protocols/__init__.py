"""Selection protocols: where a model's proxy score comes from, several side by side.

A protocol turns a study's models into proxy scores (higher is better) without reading a test label:

======================  =====================================================================================
``source_val``          the source val split (today's selection; ``selection.metric`` + ``tie_break``)
``held_out_forgery``    the families retrained without some label groups (FF-NT); each model's counterpart (same
                        method and parameters on the retrained family) scored on those groups' fakes against
                        the source's val reals: cross-manipulation validation
``dev``                 named labelled datasets that share no dataset name, video or frame file with a test set
``perturbed_val``       the source val split under a perturbation suite (mean over conditions)
``target_unlabelled``   prediction entropy / confidence on the test frames, labels never read: *transductive*,
                        reported in its own column, never used for the verdicts
======================  =====================================================================================

The registry maps a kind to a :class:`ProtocolKind`: ``score_models(run, name, config, entries)`` returns every
model's :class:`ProxyScores` at once; :func:`proxy_score` scores one candidate (what a search optimises).
Adding a protocol is one module with one class plus one :func:`register` line.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from mergekit_clip.registry import add_entry, get_entry
from study.scores import SplitScores

if TYPE_CHECKING:
    from study.config import ProtocolConfig
    from study.runner import StudyRun
    from study.selection import Entry


@dataclass(frozen=True)
class ProxyScores:
    """One protocol's scores of the study's models: higher is better, NaN = the protocol does not cover it."""

    protocol: str  # the protocol's name in the study file
    kind: str
    metric: str
    transductive: bool
    scores: dict[str, float]  # model name -> proxy score (lower-is-better metrics negated)
    ties: dict[str, float] | None = None  # model name -> tie-break value, higher is better
    tie_break: str | None = None
    reads: str = ""  # what it read, in words (the report's and --dry-run's line)
    details: dict[str, Any] = field(default_factory=dict)  # e.g. held_out_forgery: model -> its counterpart


class ProtocolKind:
    """How one kind of protocol scores models; subclasses set ``kind`` and implement :meth:`score_models`."""

    kind: ClassVar[str]
    transductive: ClassVar[bool] = False

    def describe(self, name: str, config: ProtocolConfig, study) -> str:
        raise NotImplementedError

    def score_models(self, run: StudyRun, name: str, config: ProtocolConfig, entries: Sequence[Entry]) -> ProxyScores:
        raise NotImplementedError

    def score_entry(self, run: StudyRun, name: str, config: ProtocolConfig, entry: Entry) -> float:
        """One model's proxy score (a search's objective); the default scores it alone with :meth:`score_models`."""
        return self.score_models(run, name, config, [entry]).scores[entry.name]

    def plan_lines(self, name: str, config: ProtocolConfig, study, study_file: str) -> list[str]:
        """Extra ``--dry-run`` lines (a protocol that trains or scores something the plan must show)."""
        return [f"# selection protocol {name} ({config.kind}): {self.describe(name, config, study)}"]


PROTOCOLS: dict[str, ProtocolKind] = {}


def register(protocol: ProtocolKind) -> ProtocolKind:
    return add_entry(PROTOCOLS, protocol.kind, protocol, "selection protocol")


def get_protocol(kind: str) -> ProtocolKind:
    return get_entry(PROTOCOLS, kind, "selection protocol")


# ---------------------------------------------------------------- metrics on labelled splits


def labelled_value(scores: Mapping[str, SplitScores], metric: str) -> float:
    """The mean over datasets of a registered metric (frame or pooled-video level), signed higher-is-better."""
    from mergekit_clip.metrics import get_metric, video_level

    spec = get_metric(metric)
    values = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one class -> nan, shown as n/a
        for s in scores.values():
            if spec.level == "video":
                y, p, _ = video_level(s.labels, s.scores, list(s.video_ids))
                values.append(spec.function(y, p))
            else:
                values.append(spec.function(s.labels, s.scores))
    value = float(np.mean(values)) if values else math.nan
    return value if spec.higher_is_better else -value


def labelled_proxy(
    name: str, kind: str, config: ProtocolConfig, per_model: Mapping[str, Mapping[str, SplitScores]], reads: str,
    **details: Any,
) -> ProxyScores:
    """ProxyScores of a labelled protocol from each model's scores (model -> dataset key -> SplitScores)."""
    scores = {m: labelled_value(s, config.metric) for m, s in per_model.items()}
    ties = {m: labelled_value(s, config.tie_break) for m, s in per_model.items()} if config.tie_break else None
    return ProxyScores(name, kind, config.metric, False, scores, ties, config.tie_break, reads, dict(details))


# ---------------------------------------------------------------- what the study calls


def honest_protocols(study) -> dict[str, ProtocolConfig]:
    """The protocols selection may use (computed before any test split is read), ``source_val`` first."""
    return {n: p for n, p in study.selection.all_protocols().items() if not get_protocol(p.kind).transductive}


def transductive_protocols(study) -> dict[str, ProtocolConfig]:
    return {n: p for n, p in study.selection.all_protocols().items() if get_protocol(p.kind).transductive}


def score_protocols(run: StudyRun, entries: Sequence[Entry], configs: Mapping[str, ProtocolConfig]) -> dict:
    """``{name: ProxyScores}`` of every given protocol over every model."""
    return {n: get_protocol(c.kind).score_models(run, n, c, entries) for n, c in configs.items()}


def proxy_score(run: StudyRun, protocol: str, entry: Entry) -> float:
    """The named protocol's proxy score (higher is better) of one model of ``run``: what a search optimises.

    ``entry`` is a merged candidate (:class:`study.selection.Entry`); ``held_out_forgery`` merges its counterpart
    on the retrained family with the same recipe parameters (``entry.group``, ``entry.params``) and scores that."""
    config = run.study.selection.all_protocols()[protocol]
    return get_protocol(config.kind).score_entry(run, protocol, config, entry)


def _register_builtin() -> None:
    from study.protocols import dev, held_out_forgery, perturbed_val, source_val, target_unlabelled

    for module in (source_val, held_out_forgery, dev, perturbed_val, target_unlabelled):
        register(module.PROTOCOL)


_register_builtin()

__all__ = ["PROTOCOLS", "ProtocolKind", "ProxyScores", "get_protocol", "honest_protocols", "labelled_value",
           "proxy_score", "register", "score_protocols", "transductive_protocols"]  # fmt: skip
