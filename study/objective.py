"""The score a search or a learned merge optimises: the study's chosen selection protocol, in one place.

Today the study selects on the source val split (``selection.metric``, ties ordered by ``selection.tie_break``);
when selection protocols arrive, :func:`protocol_score` and :func:`labelled_records` are the two functions to point
at the chosen protocol. Neither reads a test split.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from study.scores import metric_value
from study.selection import Entry, tie_break_value


def protocol_name(study) -> str:
    return f"source_val:{study.selection.metric}"


def protocol_score(run, entry: Entry) -> tuple[float, float]:
    """(score, tie-break), both higher-better, of one model under the chosen protocol; scores are cached."""
    pairs = [(d, run.study.data.val_split) for d in run.study.data.sources]
    val = {d: s for (d, _), s in run.score(entry, pairs).items()}
    score = metric_value(val, run.study.selection.metric)
    tie = tie_break_value(val, run.study.selection.tie_break) if run.study.selection.tie_break else math.nan
    return score, tie


def labelled_records(run) -> Sequence:
    """The frames (with labels) the chosen protocol selects on: today the source datasets' val split."""
    return [r for d in run.study.data.sources for r in run.loader(d, run.study.data.val_split)]
