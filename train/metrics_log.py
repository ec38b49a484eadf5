"""``OUT/metrics.jsonl``: one JSON object per line (epoch records, held-out scores); rank 0 writes.

Appending line-buffered without fsync keeps the per-epoch cost negligible; a killed run loses at most the
line being written, and ``--resume`` appends after the last complete one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path


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


def read_metrics(path: Path) -> list[dict]:
    """Every complete line of a metrics log (a torn last line from a killed run is ignored)."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
