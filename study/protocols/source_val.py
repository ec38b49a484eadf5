"""``source_val``: the source datasets' val split (the study's selection until protocols existed, the default)."""

from __future__ import annotations

from study.protocols import ProtocolKind, ProxyScores, labelled_proxy


class SourceVal(ProtocolKind):
    kind = "source_val"

    def describe(self, name, config, study) -> str:
        d = study.data
        return f"{config.metric} on {', '.join(d.sources)} {d.val_split}"

    def score_models(self, run, name, config, entries) -> ProxyScores:
        val = run.val_scores(entries)
        return labelled_proxy(name, self.kind, config, {e.name: val[e.name] for e in entries},
                              self.describe(name, config, run.study))  # fmt: skip


PROTOCOL = SourceVal()
