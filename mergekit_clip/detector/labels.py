"""Label names of forensic heads: the canonical order is real = 0, fake = 1."""

from __future__ import annotations

from collections.abc import Sequence

from mergekit_clip.detector.spec import CANONICAL_LABELS

# transformers' default id2label; a head saved without label names follows the field's convention.
_DEFAULT_HF = ("label_0", "label_1")


def normalize_labels(raw: Sequence[str], source: str) -> tuple[str, ...]:
    """Lower-cased label names in their stored order; refuses anything but ``real``/``fake``.

    ``("LABEL_0", "LABEL_1")`` (transformers' default names) is read as ``("real", "fake")``.
    """
    labels = tuple(str(x).strip().lower() for x in raw)
    if labels == _DEFAULT_HF:
        return CANONICAL_LABELS
    if len(labels) == 1 and labels[0] in CANONICAL_LABELS:
        return labels
    if sorted(labels) != sorted(CANONICAL_LABELS):
        raise ValueError(
            f"{source}: labels {list(raw)} are not a real/fake pair; a detector's labels must be "
            f"{list(CANONICAL_LABELS)} in some order"
        )
    return labels


def canonical_permutation(labels: Sequence[str]) -> list[int]:
    """Row indices that reorder a 2-logit head stored with ``labels`` into (real, fake)."""
    return [list(labels).index(name) for name in CANONICAL_LABELS]
