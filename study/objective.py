"""The score a search or a learned merge optimises: the study's chosen selection protocol (``selection.protocol``).

:func:`protocol_score` is the protocol registry's :func:`study.protocols.proxy_score`; :func:`labelled_records`
the frames a learned merge fits its coefficients on (the source val split, what ``source_val`` reads). Neither
reads a test label.
"""

from __future__ import annotations

from collections.abc import Sequence

from study.selection import Entry


def protocol_name(study) -> str:
    config = study.selection.all_protocols()[study.selection.protocol]
    return f"{study.selection.protocol}:{config.model_dump_json()}"


def protocol_score(run, entry: Entry) -> float:
    """The chosen protocol's proxy score (higher is better) of one model; its scores are cached."""
    from study.protocols import proxy_score

    return proxy_score(run, run.study.selection.protocol, entry)


def labelled_records(run) -> Sequence:
    """The labelled frames a learned merge fits on: the source datasets' val split."""
    return [r for d in run.study.data.sources for r in run.loader(d, run.study.data.val_split)]
