"""How the data-aware methods find an ingredient's statistics during a mergekit run.

mergekit identifies each input of a tensor group by its ``ModelReference``; the ingredient directory is its
``model.path``. Direct callers (tests, the study layer) may use the directory itself as the id.
"""

from __future__ import annotations

from mergekit.merge_methods.base import TensorGroup

from mergekit_clip.stats.store import StatsError, StatsFile, open_stats


def model_dir(entry_id) -> str:
    reference = getattr(entry_id, "model", None)
    return str(reference.path if reference is not None else entry_id)


def group_stats(group: TensorGroup, kind: str, method: str) -> list[StatsFile]:
    return [open_stats(model_dir(entry.id), kind, method) for entry in group.entries]


def tensors_for(group: TensorGroup, stats: list[StatsFile], method: str) -> list | None:
    """Each ingredient's statistic for this group's tensor, or ``None`` when no ingredient has one."""
    name = group.metadata.name
    device = group.entries[0].tensor.device
    found = [s.get(name, device) for s in stats]
    if all(t is None for t in found):
        return None
    if any(t is None for t in found):
        missing = [s.model_dir for s, t in zip(stats, found) if t is None]
        raise StatsError(
            f"{method}: tensor {name} has statistics in some ingredients but not in {missing}; "
            "recompute them all with `mergekit-clip stats` on the same kind of detector"
        )
    return found
