"""``OUT/metrics.jsonl``: one JSON object per line (epoch records, held-out scores); rank 0 writes.

Appending line-buffered without fsync keeps the per-epoch cost negligible; a killed run loses at most the
line being written. ``--resume`` first rewrites the log without what it is about to redo (:meth:`MetricsLog.rewind`:
the unfinished ingredient's lines past its last checkpoint, and a torn last line), so a resumed run's log holds
the same lines as an uninterrupted one's, none twice.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from mergekit_clip.outputs import write_text_atomic


class MetricsLog:
    def __init__(self, path: Path | None, enabled: bool = True):
        self.path = path
        self.enabled = enabled and path is not None

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        line = json.dumps({"time": round(time.time(), 3), **record}, allow_nan=False, default=str)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")

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
            return r.get("stage") == "finetune" and int(r.get("epoch", 0)) <= checkpoint_epoch

        keep = [r for r in records if kept(r)]
        text = "".join(json.dumps(r, allow_nan=False, default=str) + "\n" for r in keep)
        if text != self.path.read_text(encoding="utf-8"):
            write_text_atomic(self.path, text)
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
