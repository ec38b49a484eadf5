"""TensorBoard backend: one run folder per ingredient (``OUT/tensorboard/<ingredient>/``), scalars per record,
the ingredient's configuration as text, and :func:`write_hparams` for a study's sortable candidate table."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mergekit_clip.tracking.records import flat_params, scalars


def _writer(logdir: Path):
    from torch.utils.tensorboard import SummaryWriter  # the tensorboard package's event writer

    # flushed every 10 s (TensorBoard's default is 120 s) and on close: a per-point flush cost 1.8 ms a record
    return SummaryWriter(log_dir=str(logdir), flush_secs=10)


class TensorBoardTracker:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.writers: dict[str, Any] = {}

    def _for(self, run: str):
        if run not in self.writers:
            self.writers[run] = _writer(self.root / run)
        return self.writers[run]

    def record(self, record: Mapping[str, Any]) -> None:
        run = str(record.get("ingredient") or "run")
        x, values = scalars(record)
        writer = self._for(run)
        for tag, value in values.items():
            writer.add_scalar(tag, value, x)

    def text(self, run: str, tag: str, text: str) -> None:
        # markdown: a fenced block keeps YAML's indentation in TensorBoard's text tab
        self._for(run).add_text(tag, f"```\n{text}\n```")

    def reset(self, run: str) -> None:
        writer = self.writers.pop(run, None)
        if writer is not None:
            writer.close()
        shutil.rmtree(self.root / run, ignore_errors=True)

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()


def write_hparams(root: Path, rows: Mapping[str, tuple[Mapping[str, Any], Mapping[str, float]]]) -> None:
    """One HParams row per run name: ``rows[name] = (hyper-parameters, metrics)``; replaces what ``root`` held."""
    shutil.rmtree(root, ignore_errors=True)
    writer = _writer(Path(root))
    try:
        for name, (params, metrics) in rows.items():
            finite = {k: float(v) for k, v in metrics.items() if v is not None and v == v}
            writer.add_hparams(flat_params(params), finite, run_name=name)
    finally:
        writer.close()
