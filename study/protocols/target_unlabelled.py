"""``target_unlabelled``: label-free signals on the test frames (AdaMerging minimises prediction entropy).

*Transductive*: it reads the target (test) frames, though never their labels, so it is scored after selection,
reported in its own column marked transductive and never used for the verdicts. Signals, higher is better:
``entropy`` = minus the mean binary entropy of P(fake) over frames (confident models score high), ``confidence`` =
the mean of max(P(fake), 1 - P(fake)); the mean over the named test sets."""

from __future__ import annotations

import math

import numpy as np

from study.protocols import ProtocolKind, ProxyScores


def unlabelled_signal(scores: np.ndarray, signal: str) -> float:
    """``entropy``: minus the mean binary entropy (nats); ``confidence``: the mean of max(p, 1 - p)."""
    p = np.clip(np.asarray(scores, dtype=np.float64), 1e-7, 1 - 1e-7)
    if p.size == 0:
        return math.nan
    if signal == "entropy":
        return float(np.mean(p * np.log(p) + (1 - p) * np.log(1 - p)))
    if signal == "confidence":
        return float(np.mean(np.maximum(p, 1 - p)))
    raise ValueError(f"unknown unlabelled signal {signal!r}: choose entropy or confidence")


class TargetUnlabelled(ProtocolKind):
    kind = "target_unlabelled"
    transductive = True

    def describe(self, name, config, study) -> str:
        datasets = config.datasets or study.data.test
        return (f"TRANSDUCTIVE: {config.metric} of P(fake) on the test frames of {', '.join(datasets)} "
                "(labels never read)")  # fmt: skip

    def score_models(self, run, name, config, entries) -> ProxyScores:
        d = run.study.data
        pairs = [(t, d.test_split) for t in (config.datasets or d.test)]
        scores = {}
        for entry in entries:
            got = run.store.get_unlabelled(entry.path, entry.model_hash, pairs, entry.name)
            scores[entry.name] = float(np.mean([unlabelled_signal(p, config.metric) for p in got.values()]))
        return ProxyScores(name, self.kind, config.metric, True, scores, None, None,
                           self.describe(name, config, run.study))  # fmt: skip


PROTOCOL = TargetUnlabelled()
