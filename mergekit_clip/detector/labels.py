"""Label names, normalised once: dataset label strings and forensic-head labels alike.

:func:`canonical_label` (strip, then casefold) is the one normalisation every stage applies: the dataset reader
and ``data validate`` look dataset label strings up with it, :class:`~mergekit_clip.detector.spec.HeadSpec`
applies it in its validator (so the model, ``clip-eval`` scoring and the merge head policy only ever see
``real``/``fake``), and the Hugging Face import uses it for ``id2label``. Whatever one stage accepts, every later
stage therefore reads identically; a spelling it refuses is refused where it is read, with one line.

The canonical head order is real = 0, fake = 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

CANONICAL_LABELS = ("real", "fake")  # index 0 = real, 1 = fake, always
# transformers' default id2label: a classifier saved without label names. Read as (real, fake) only where a
# Hugging Face id2label or the user's explicit ``--labels`` says so (normalize_labels), never in a detector config.
_DEFAULT_HF = ("label_0", "label_1")


def canonical_label(name: Any) -> str:
    """``" Fake "`` -> ``"fake"``: surrounding whitespace removed, then casefolded (``str.casefold``).

    >>> canonical_label("  CelebDFv2_Fake ")
    'celebdfv2_fake'
    """
    if not isinstance(name, str):
        raise ValueError(f"a label name must be a string, got {name!r} ({type(name).__name__})")
    return name.strip().casefold()


def canonical_label_dict(label_dict: Iterable[tuple[str, int]] | dict[str, int], source: str) -> dict[str, int]:
    """``{canonical name: 0|1}``; two spellings of one name with different values are an error naming both."""
    items = label_dict.items() if isinstance(label_dict, dict) else label_dict
    out: dict[str, int] = {}
    spelled: dict[str, str] = {}
    for name, value in items:
        key = canonical_label(name)
        if key in out and out[key] != int(value):
            raise ValueError(
                f"{source}: label strings {spelled[key]!r} and {name!r} are the same name once case and spaces are "
                f"ignored, but map to {out[key]} and {int(value)}"
            )
        out[key], spelled[key] = int(value), name
    return out


def canonical_head_labels(raw: Sequence[Any], source: str = "") -> tuple[str, ...]:
    """Head label names as stored (order kept), each canonical and each ``real`` or ``fake``."""
    where = f"{source}: " if source else ""
    try:
        labels = tuple(canonical_label(x) for x in raw)
    except ValueError as e:
        raise ValueError(f"{where}{e}") from e
    unknown = [x for x, c in zip(raw, labels) if c not in CANONICAL_LABELS]
    if unknown:
        hint = ""
        if set(labels) & set(_DEFAULT_HF):
            hint = " (transformers' default names carry no meaning: import the model with --labels real,fake)"
        raise ValueError(
            f"{where}label(s) {unknown} are not {list(CANONICAL_LABELS)} (case and surrounding spaces are "
            f"ignored){hint}"
        )
    return labels


def normalize_labels(raw: Sequence[str], source: str) -> tuple[str, ...]:
    """Label names of a head being imported (HF ``id2label``, ``--labels``): a real/fake pair or one of them.

    ``("LABEL_0", "LABEL_1")`` (transformers' default names) is read as ``("real", "fake")``: the DeepfakeBench
    convention for a classifier saved without names, stated here so it is the only place that assumes it.
    """
    labels = tuple(canonical_label(str(x)) for x in raw)
    if labels == _DEFAULT_HF:
        return CANONICAL_LABELS
    labels = canonical_head_labels(raw, source)
    if len(labels) == 1:
        return labels
    if sorted(labels) != sorted(CANONICAL_LABELS):
        raise ValueError(
            f"{source}: labels {list(raw)} are not a real/fake pair; a detector's labels must be "
            f"{list(CANONICAL_LABELS)} in some order"
        )
    return labels


def canonical_permutation(labels: Sequence[str]) -> list[int]:
    """Row indices that reorder a 2-logit head stored with ``labels`` into (real, fake)."""
    names = [canonical_label(x) for x in labels]
    return [names.index(name) for name in CANONICAL_LABELS]
