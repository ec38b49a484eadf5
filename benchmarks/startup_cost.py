"""Start-up cost of the ``mergekit_clip.pth`` hook for Python processes that never import mergekit.

The ``.pth`` line imports nothing: it inserts a meta-path finder. This checks that no module of ours (nor
torch/mergekit/transformers) is imported by a bare interpreter, then times ``python -c pass`` with the plugin
enabled and disabled (``MERGEKIT_CLIP_DISABLE=1``, which skips the line's work) interleaved in one run (order
rotated each round): median [range] of wall and of the child's CPU time, and of the per-round ratio.

    python -m benchmarks.startup_cost [--runs 30]
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys

import click

from benchmarks._timing import Sample, interleaved, measure, speed_ratio, times

_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)")


def importtime_us(env: dict[str, str]) -> tuple[int, int]:
    """(hook cumulative µs, total top-level cumulative µs) from one ``-X importtime`` run."""
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"], env=env, capture_output=True, text=True)
    hook = total = 0
    for line in err.stderr.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        cumulative, indent, name = int(m.group(2)), len(m.group(3)), m.group(4)
        if indent == 1:  # top-level imports
            total += cumulative
        if name.startswith("mergekit_clip"):  # should never appear: the .pth line imports nothing
            hook += cumulative
    return hook, total


def start_samples(envs: dict[str, dict[str, str]], runs: int) -> dict[str, list[Sample]]:
    """``python -c pass`` per environment, runs interleaved so that machine load hits all alike."""

    def start(env: dict[str, str]) -> Sample:
        return measure(lambda: subprocess.run([sys.executable, "-c", "pass"], env=env, check=True))[1]

    return interleaved({name: (lambda e=env: start(e)) for name, env in envs.items()}, runs)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--runs", default=30, show_default=True, help="interpreter starts per measurement")
def main(runs: int) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MERGEKIT_CLIP_DISABLE"}
    samples = [importtime_us(env) for _ in range(runs)]
    hook = statistics.median(s[0] for s in samples)
    total = statistics.median(s[1] for s in samples)
    probe = "import sys; print(sorted(m for m in sys.modules if m.split('.')[0] in HEAVY))".replace(
        "HEAVY", "('torch', 'mergekit', 'transformers', 'mergekit_clip')"
    )
    leaked = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True).stdout.strip()
    starts = start_samples({"on": env, "off": {**env, "MERGEKIT_CLIP_DISABLE": "1"}}, runs)
    click.echo(f"hook import time (median of {runs}): {hook:.0f} us of {total:.0f} us start-up imports "
               f"({100 * hook / max(total, 1):.2f} %)")  # fmt: skip
    click.echo(f"heavy modules imported by a bare interpreter: {leaked}")
    ms = {k: [Sample(x.wall * 1000, x.cpu * 1000) for x in xs] for k, xs in starts.items()}
    for field in ("wall", "cpu"):
        ratio = speed_ratio(ms["off"], ms["on"], field)  # per round on / off: > 1 = the plugin costs time
        click.echo(f"python -c pass {field} time, median [range] of {runs}: plugin on "
                   f"{times(ms['on'], field).text('.1f', ' ms')}, off {times(ms['off'], field).text('.1f', ' ms')}, "
                   f"on / off {ratio.median:.3f} [{ratio.low:.3f}-{ratio.high:.3f}]")  # fmt: skip


if __name__ == "__main__":
    main()
