"""What the trackers add to each ``metrics.jsonl`` record (clip-train writes one per optimiser step).

Writes N step records through :class:`train.metrics_log.MetricsLog` with the log alone and with TensorBoard on,
interleaved in one run (warm-up first: the tensorboard import and the first writer), and prints the median cost per
record of each with its spread, process CPU beside wall, and the extra time per 1 000 steps.

    python -m benchmarks.tracking_cost [--records 2000] [--repeats 5]
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import click

from mergekit_clip.tracking import TrackingConfig, open_trackers
from train.metrics_log import MetricsLog


def one_pass(folder: Path, tensorboard: bool, records: int) -> tuple[float, float]:
    """(wall, cpu) seconds per record."""
    folder.mkdir(parents=True)
    trackers = open_trackers(TrackingConfig(tensorboard=tensorboard), folder, experiment="bench")
    log = MetricsLog(folder / "metrics.jsonl", trackers=trackers)
    wall, cpu = time.perf_counter(), time.process_time()
    for step in range(records):
        log.write({"ingredient": "ft_s0", "stage": "step", "epoch": 1, "step": step, "loss": 0.5, "lr": 1e-3})
    log.close()
    return (time.perf_counter() - wall) / records, (time.process_time() - cpu) / records


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--records", default=2000, show_default=True, help="step records per pass")
@click.option("--repeats", default=5, show_default=True, help="interleaved passes per variant (median and spread)")
def main(records: int, repeats: int) -> None:
    """Per-record cost of the log alone vs the log + TensorBoard."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        one_pass(root / "warm", True, 10)
        results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for i in range(repeats):
            for tb in ((False, True) if i % 2 == 0 else (True, False)):  # rotated order
                results[tb].append(one_pass(root / f"{i}-{tb}", tb, records))
    click.echo(f"{records} step records, {repeats} interleaved passes; median [min, max] per record")
    for tb, name in ((False, "metrics.jsonl only"), (True, "+ TensorBoard")):
        wall = [w * 1e6 for w, _ in results[tb]]
        cpu = [c * 1e6 for _, c in results[tb]]
        click.echo(f"  {name:20s} wall {statistics.median(wall):7.1f} us [{min(wall):.1f}, {max(wall):.1f}]   "
                   f"cpu {statistics.median(cpu):7.1f} us [{min(cpu):.1f}, {max(cpu):.1f}]")  # fmt: skip
    extra = statistics.median(w for w, _ in results[True]) - statistics.median(w for w, _ in results[False])
    click.echo(f"TensorBoard adds {extra * 1e3 * 1000:.1f} ms per 1000 steps (wall)")


if __name__ == "__main__":
    main()
