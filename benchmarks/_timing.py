"""Timings that hold still on a shared machine: both sides of a ratio measured interleaved, repeated, reported as
the median with its spread, and process CPU time beside wall time.

Wall time on a busy machine moves with the other jobs (0.77-1.35x between runs of one benchmark on 2 shared cores);
CPU time of the measuring process (and its finished children) moves much less, so a ratio of CPU times is the
figure to trust there, wall time the one to quote on a quiet machine. Rounds rotate the order of the cases so none
always runs first (warm caches, turbo) or last.
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

REPEATS = 5  # the default number of interleaved rounds; every ratio is the median of at least this many


@dataclass(frozen=True)
class Sample:
    """One measurement: wall seconds and CPU seconds (this process's threads plus children waited for)."""

    wall: float
    cpu: float

    def per(self, items: float) -> Sample:
        return Sample(self.wall / items, self.cpu / items)


def _cpu_now() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def measure(fn: Callable[[], Any]) -> tuple[Any, Sample]:
    """``fn()``'s result and its :class:`Sample` (children count once they have been waited for)."""
    cpu0, wall0 = _cpu_now(), time.perf_counter()
    result = fn()
    wall, cpu = time.perf_counter() - wall0, _cpu_now() - cpu0
    return result, Sample(wall, cpu)


def interleaved(cases: dict[str, Callable[[], Sample]], repeats: int = REPEATS) -> dict[str, list[Sample]]:
    """Run every case once per round, ``repeats`` rounds, the order rotated each round; samples per case in
    round order (so ``out[a][i]`` and ``out[b][i]`` were measured close in time)."""
    names = list(cases)
    out: dict[str, list[Sample]] = {n: [] for n in names}
    for r in range(repeats):
        for k in range(len(names)):
            name = names[(r + k) % len(names)]
            out[name].append(cases[name]())
    return out


@dataclass(frozen=True)
class Spread:
    """Median and range of repeated values."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values))

    def rounded(self, digits: int = 2) -> list[float]:
        """``[median, low, high]`` rounded, for JSON lines."""
        return [round(self.median, digits), round(self.low, digits), round(self.high, digits)]

    def ratio_text(self) -> str:
        return f"{self.median:.2f}x [{self.low:.2f}-{self.high:.2f}]"

    def text(self, fmt: str = ".2f", unit: str = "") -> str:
        return f"{self.median:{fmt}}{unit} [{self.low:{fmt}}-{self.high:{fmt}}]"


def speed_ratio(samples: Sequence[Sample], baseline: Sequence[Sample], field: str) -> Spread:
    """Per round, ``baseline time / samples time`` (> 1: faster than the baseline) for ``field`` ("wall"/"cpu")."""
    return Spread.of([getattr(b, field) / getattr(s, field) for s, b in zip(samples, baseline, strict=True)])


def times(samples: Sequence[Sample], field: str) -> Spread:
    return Spread.of([getattr(s, field) for s in samples])


def ratio_columns(samples: Sequence[Sample], baseline: Sequence[Sample]) -> str:
    """``"wall 1.23x [1.10-1.35]  CPU 1.20x [1.18-1.22]"``: speed against the baseline, median [range] of rounds."""
    wall, cpu = speed_ratio(samples, baseline, "wall"), speed_ratio(samples, baseline, "cpu")
    return f"wall {wall.ratio_text()}  CPU {cpu.ratio_text()}"
