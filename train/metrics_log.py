"""``OUT/metrics.jsonl``: one JSON object per line (epoch records, held-out scores); rank 0 writes.

Appending line-buffered without fsync keeps the per-epoch cost negligible; a killed run loses at most the
line being written. Every line also goes to the experiment trackers (TensorBoard, MLflow:
:mod:`mergekit_clip.tracking`), so they show exactly what the log holds. ``--resume`` first rewrites the log
without what it is about to redo (:meth:`MetricsLog.rewind`: the unfinished ingredient's lines past its last
checkpoint, and a torn last line), so a resumed run's log holds the same lines as an uninterrupted one's, none
twice; the trackers forget that ingredient and replay its kept lines.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from mergekit_clip.outputs import write_text_atomic
from mergekit_clip.tracking import Trackers

# stages whose lines belong to a fine-tuning epoch: a resume keeps those of checkpointed epochs
_EPOCH_STAGES = ("finetune", "step")


class MetricsLog:
    def __init__(self, path: Path | None, enabled: bool = True, trackers: Trackers | None = None):
        self.path = path
        self.enabled = enabled and path is not None
        self.trackers = trackers if (trackers is not None and self.enabled) else Trackers()

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        record = {"time": round(time.time(), 3), **record}
        line = json.dumps(record, allow_nan=False, default=str)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
        self.trackers.record(record)

    def close(self) -> None:
        self.trackers.close()

    def rewind(self, ingredient: str, checkpoint_epoch: int | None) -> int:
        """Drop ``ingredient``'s lines that a resume will write again; returns how many were dropped.

        With a checkpoint after epoch ``e`` its probe lines and fine-tuning epochs ``<= e`` stay (the resumed
        run continues from them); without one, every line of the ingredient goes (it starts over).
        """
        if not self.enabled or not self.path.exists():
            return 0
        records = read_metrics(self.path)

        def kept(r: dict) -> bool:
            if r.get("ingredient") != ingredient:
                return True
            if checkpoint_epoch is None:
                return False
            if r.get("stage") == "probe":
                return True
            return r.get("stage") in _EPOCH_STAGES and int(r.get("epoch", 0)) <= checkpoint_epoch

        keep = [r for r in records if kept(r)]
        text = "".join(json.dumps(r, allow_nan=False, default=str) + "\n" for r in keep)
        if text != self.path.read_text(encoding="utf-8"):
            write_text_atomic(self.path, text)
        if self.trackers:
            self.trackers.replay(ingredient, keep)
        return len(records) - len(keep)


def read_metrics(path: Path) -> list[dict]:
    """Every complete line of a metrics log (a torn last line from a killed run is ignored)."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
