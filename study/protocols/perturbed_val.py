"""``perturbed_val``: the source val split under a named perturbation suite (robustness as a proxy).

Each model is scored on every source dataset's val split under every perturbation of the suite (``clip-eval
--perturb``'s seeded code, kept in the study's score store); the proxy is the metric's mean over datasets and
perturbations."""

from __future__ import annotations

from study.protocols import ProtocolKind, ProxyScores, labelled_proxy


class PerturbedVal(ProtocolKind):
    kind = "perturbed_val"

    def describe(self, name, config, study) -> str:
        from mergekit_clip.data.perturbations import expand_perturbations

        n = len(expand_perturbations(config.perturbations))
        return (f"{config.metric} on {', '.join(study.data.sources)} {study.data.val_split} under "
                f"{', '.join(config.perturbations)} ({n} conditions, seed {config.seed})")  # fmt: skip

    def score_models(self, run, name, config, entries) -> ProxyScores:
        from mergekit_clip.data.perturbations import expand_perturbations

        specs = expand_perturbations(config.perturbations)
        pairs = [(d, run.study.data.val_split) for d in run.study.data.sources]
        per_model = {}
        for entry in entries:
            got = run.store.get_perturbed(entry.path, entry.model_hash, pairs, entry.name, specs, config.seed)
            per_model[entry.name] = {f"{d}|{key}": s for (d, _, key), s in got.items()}
        return labelled_proxy(name, self.kind, config, per_model, self.describe(name, config, run.study))


PROTOCOL = PerturbedVal()
