"""benchmarks._timing: interleaved rounds with a rotated order, per-round ratios, median and range."""

from __future__ import annotations

from benchmarks._timing import Sample, Spread, interleaved, measure, speed_ratio


def test_rounds_interleave_and_rotate_and_ratios_pair_rounds():
    order: list[str] = []

    def case(name: str, seconds: list[float]):
        it = iter(seconds)

        def run() -> Sample:
            order.append(name)
            s = next(it)
            return Sample(s, s / 2)

        return run

    out = interleaved({"a": case("a", [2.0, 4.0, 3.0]), "b": case("b", [1.0, 1.0, 3.0])}, repeats=3)
    assert order == ["a", "b", "b", "a", "a", "b"]  # every case once per round, the first one rotated
    # per round b's time / a's time: 0.5, 0.25, 1.0 -> median 0.5, range 0.25-1.0 (not the ratio of medians, 1/3)
    assert speed_ratio(out["a"], out["b"], "wall") == Spread(0.5, 0.25, 1.0)
    assert speed_ratio(out["a"], out["b"], "cpu") == Spread(0.5, 0.25, 1.0)
    assert Spread(0.5, 0.25, 1.0).ratio_text() == "0.50x [0.25-1.00]"


def test_measure_counts_cpu_time_not_sleep():
    import time

    _, sleeping = measure(lambda: time.sleep(0.2))
    assert sleeping.wall >= 0.2 and sleeping.cpu < 0.1
    _, busy = measure(lambda: sum(i * i for i in range(200_000)))
    assert busy.cpu > 0
