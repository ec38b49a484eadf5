"""``held_out_forgery``: cross-manipulation validation (FaceForensics++'s own protocol) as a selection proxy.

The study retrains its families on the source *minus* the held-out label groups (``hold_out: [FF-NT]``), builds
the same candidates on them (same methods, parameters and ingredient selections: a *shadow study*, run with the
study's own code under ``OUT/protocols/<name>/``), and scores each on the held-out groups' fakes against the
source's val reals. A model's proxy score is its counterpart's: what the same recipe reaches on a forgery method
its ingredients never saw. No test split is read.

The data the shadow study needs is derived from the source JSONs into ``OUT/protocols/<name>/json/`` (frame paths
unchanged, so the data root is the same): ``<D>-without-<G>`` for every training dataset ``D`` holding a held-out
group (a dataset left with no fake group, FF-NT's own list, is dropped with the ingredients trained on it), and
``<S>-only-<G>`` (the source's real groups + the held-out groups) whose val split is the proxy's.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from study.protocols import ProtocolKind, ProxyScores, labelled_proxy


def protocol_root(study, name: str) -> Path:
    return study.output / "protocols" / name


def _suffix(config) -> str:
    return "+".join(config.hold_out)


def _group_is_real(groups: dict[str, Any], group: str) -> bool:
    from mergekit_clip.data.deepfakebench import canonical_labels, lookup_label

    def first_label(node: Any) -> Any:
        if isinstance(node, dict):
            if "frames" in node:
                return node.get("label")
            for child in node.values():
                found = first_label(child)
                if found is not None:
                    return found
        return None

    return lookup_label(first_label(groups[group]), canonical_labels(None)) == 0


def _write_if_changed(file: Path, doc: dict) -> None:
    text = json.dumps(doc)
    if file.exists() and file.read_text() == text:
        return  # unchanged bytes keep the score keys (they hash the JSON) and the families' resolved configs
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{file.stem}.", suffix=".json", dir=file.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, file)


@dataclass(frozen=True)
class DerivedData:
    """Dataset names of the shadow study: original training dataset -> derived one (None = dropped)."""

    json_root: Path
    train: dict[str, str | None]
    eval: list[str]  # the proxy's datasets (<S>-only-<G>, val split)


def derive_datasets(study, name: str, config, train_datasets: list[str], write: bool = True) -> DerivedData:
    """Plan (and with ``write``, write) the derived JSONs; raises when no source holds a held-out group."""
    from mergekit_clip.data.deepfakebench import read_dataset_json

    root = protocol_root(study, name) / "json"
    hold = set(config.hold_out)
    suffix = _suffix(config)
    train: dict[str, str | None] = {}
    evals: list[str] = []
    for dataset in dict.fromkeys([*study.data.sources, *train_datasets]):
        groups = read_dataset_json(dataset, study.data.json_root)
        kept = {g: v for g, v in groups.items() if g not in hold}
        if len(kept) == len(groups):
            train[dataset] = dataset
            if write:
                _write_if_changed(root / f"{dataset}.json", {dataset: groups})
            continue
        fakes = [g for g in kept if not _group_is_real(groups, g)]
        derived = f"{dataset}-without-{suffix}"
        train[dataset] = derived if fakes else None
        if fakes and write:
            _write_if_changed(root / f"{derived}.json", {derived: kept})
        if dataset in study.data.sources:
            only = f"{dataset}-only-{suffix}"
            reals = {g: v for g, v in groups.items() if _group_is_real(groups, g)}
            evals.append(only)
            if write:
                held = {g: groups[g] for g in groups if g in hold}
                _write_if_changed(root / f"{only}.json", {only: {**reals, **held}})
    if not evals:
        raise ValueError(f"selection.protocols.{name}.hold_out {config.hold_out}: no source dataset "
                         f"({', '.join(study.data.sources)}) has these label groups")  # fmt: skip
    return DerivedData(root, train, evals)


def _map_entry(value, train: dict[str, str | None]):
    """A training dataset entry (a name or a pooled list) through ``train``; None when nothing is left."""
    if isinstance(value, str):
        return train.get(value, value)
    kept = [train.get(v, v) for v in value if train.get(v, v) is not None]
    return kept or None


def covered_families(study, config) -> list[str]:
    return config.families or [n for n in study.ingredient_families()
                                if study.families[n].config is not None and study.families[n].data == "study"]


def shadow_study(study, name: str, config, write: bool = True):
    """The study the protocol runs: its covered families retrained without the held-out groups, their groups."""
    from study.config import FamilyConfig, StudyConfig
    from study.families import plan_families

    plans = plan_families(study)
    covered = covered_families(study, config)
    configs = {f: plans[f].train_config() for f in covered}
    datasets = [d for c in configs.values() for e in (c.sweep.train_datasets or [c.data.train_dataset])
                for d in ([e] if isinstance(e, str) else e)]  # fmt: skip
    derived = derive_datasets(study, name, config, datasets, write)
    root = protocol_root(study, name)
    families: dict[str, FamilyConfig] = {}
    for fam, entry in study.families.items():
        if fam in covered:
            sets = dict(entry.set)
            if configs[fam].sweep.train_datasets is not None:
                mapped = [_map_entry(e, derived.train) for e in configs[fam].sweep.train_datasets]
                sets["sweep.train_datasets"] = [m for m in mapped if m is not None]
            families[fam] = entry.model_copy(update={"set": sets, "output": root / "families" / fam})
        elif any(study.families[f].backbone_from == fam for f in covered):
            # a start the covered families need: reused as it is (same config, same folder)
            families[fam] = entry.model_copy(update={"role": "backbone", "output": plans[fam].output})
    sources = [derived.train[s] for s in study.data.sources if derived.train.get(s)]
    # a search group is one fixed point here (its grid scalars): a searched candidate's counterpart is merged on
    # demand with its own parameters (score_entry), the shadow runs no search of its own
    merges = {g: m.model_copy(update={"family": study.family_of(m), "search": None}) for g, m in study.merges.items()
              if study.family_of(m) in covered}  # fmt: skip
    soups = {g: s.model_copy(update={"family": study.family_of(s)}) for g, s in study.soups.items()
             if study.family_of(s) in covered}  # fmt: skip
    source = sources[0] if len(sources) == 1 else sources
    data = study.data.model_copy(update={"json_root": derived.json_root, "source": source, "test": derived.eval})
    shadow = StudyConfig(
        name=f"{study.name}:{name}", output=root, data=data, families=families, merges=merges, soups=soups,
        eval=study.eval, mergekit=study.mergekit, stats=study.stats, bootstrap=study.bootstrap,
    )  # fmt: skip
    return shadow, derived


def _point(ingredient, mapped) -> tuple:
    return (ingredient.mode, ingredient.seed, ingredient.lr, ingredient.weight_decay, ingredient.augment_strength,
            json.dumps(mapped))  # fmt: skip


def counterparts(study, shadow, derived: DerivedData) -> dict[str, str]:
    """Model name in the study -> its counterpart's name in the shadow study (ingredients by sweep point)."""
    from study.families import plan_families

    plans, shadow_plans = plan_families(study), plan_families(shadow)
    multi, shadow_multi = len(study.ingredient_families()) > 1, len(shadow.ingredient_families()) > 1
    out: dict[str, str] = {}
    for fam in shadow.ingredient_families():
        theirs = {_point(p, p.train_dataset): p.name for p in shadow_plans[fam].train_config().ingredients()}
        for p in plans[fam].train_config().ingredients():
            mapped = _map_entry(p.train_dataset, derived.train)
            if mapped is None:
                continue  # trained only on a held-out group: no counterpart
            match = theirs.get(_point(p, mapped))
            if match is not None:
                out[f"{fam}/{p.name}" if multi else p.name] = f"{fam}/{match}" if shadow_multi else match
    return out


def _searched(study, group: str) -> bool:
    entry = study.merges.get(group)
    return entry is not None and entry.search is not None


class HeldOutForgery(ProtocolKind):
    kind = "held_out_forgery"

    def describe(self, name, config, study) -> str:
        families = ", ".join(covered_families(study, config))
        return (f"{config.metric} on the {', '.join(config.hold_out)} fakes against the source val reals, each model's "
                f"counterpart built from family/families {families} retrained without them")  # fmt: skip

    def shadow_run(self, run, name, config):
        """The shadow study, trained, merged and scored on its own val (once per run)."""
        from study.runner import StudyRun

        cache = run.protocol_state.setdefault(name, {})
        if "run" not in cache:
            shadow, derived = shadow_study(run.study, name, config)
            sub = StudyRun(shadow, progress=run.progress)
            sub.store._predictor_factory = lambda: run.store.predictor  # one decoded-frame cache for both
            sub.prepare()
            result = sub.validation()
            cache.update(run=sub, derived=derived, result=result, names=counterparts(run.study, shadow, derived))
        return cache

    def _score(self, sub, derived, entry) -> dict:
        pairs = [(d, sub.study.data.val_split) for d in derived.eval]
        return {d: s for (d, _), s in sub.score(entry, pairs).items()}

    def score_models(self, run, name, config, entries) -> ProxyScores:
        state = self.shadow_run(run, name, config)
        sub, names = state["run"], state["names"]
        theirs = {e.name: e for e in state["result"].entries}
        per_model, paired = {}, {}
        for entry in entries:
            other = theirs.get(names.get(entry.name, entry.name))
            if other is None and entry.kind == "merge" and _searched(run.study, entry.group):
                other = self.counterpart(run, name, config, entry)  # a search trial: merged on demand
            if other is None:
                continue  # not covered: NaN below
            per_model[entry.name] = self._score(sub, state["derived"], other)
            paired[entry.name] = other.name
        proxy = labelled_proxy(name, self.kind, config, per_model, self.describe(name, config, run.study),
                               counterparts=paired, families=covered_families(run.study, config),
                               eval_datasets=state["derived"].eval)  # fmt: skip
        nan = float("nan")
        scores = {e.name: proxy.scores.get(e.name, nan) for e in entries}
        ties = {e.name: proxy.ties.get(e.name, nan) for e in entries} if proxy.ties is not None else None
        return ProxyScores(proxy.protocol, proxy.kind, proxy.metric, False, scores, ties, proxy.tie_break,
                           proxy.reads, proxy.details)  # fmt: skip

    def score_entry(self, run, name, config, entry) -> float:
        """A merge candidate's counterpart: the same group and parameters merged on the retrained family."""
        if entry.kind != "merge":
            return super().score_entry(run, name, config, entry)
        from study.protocols import labelled_value

        other = self.counterpart(run, name, config, entry)
        if other is None:
            return float("nan")  # a family the protocol does not cover
        return labelled_value(self._score(run.protocol_state[name]["run"], run.protocol_state[name]["derived"], other),
                              config.metric)  # fmt: skip

    def counterpart(self, run, name, config, entry):
        """The merged counterpart (an Entry of the shadow run) of a merge candidate, or None when not covered."""
        from mergekit_clip.recipe import build_recipe, select_ingredients
        from study.candidates import MergeCandidate, merge_options, run_merges
        from study.hashing import recipe_key
        from study.selection import Entry

        sub = self.shadow_run(run, name, config)["run"]
        group = sub.study.merges.get(entry.group)
        if group is None:
            return None
        method = group.method or entry.group
        family = sub.families[sub.study.family_of(group)]
        chosen = select_ingredients(family, group.select)
        recipe = build_recipe(method, family, chosen, dict(entry.params), absolute_paths=True)
        key = recipe_key(recipe, sub.hashes, merge_options(sub.study))
        candidate = MergeCandidate(group=entry.group, method=method, family=sub.study.family_of(group),
                                   params=dict(entry.params), searched=entry.searched,
                                   ingredients=tuple(i.name for i in chosen), recipe=recipe, key=key)  # fmt: skip
        run_merges([candidate], sub.out, sub.study, progress=False, hashes=sub.hashes)
        model = candidate.model_dir(sub.out)
        return Entry(candidate.name, "merge", candidate.group, model, sub.hashes.model(model))

    def plan_lines(self, name, config, study, study_file) -> list[str]:
        from study.dryrun import plan_commands

        try:
            shadow, derived = shadow_study(study, name, config)
        except Exception as e:  # the source JSON is not there yet (a benchmark the plan synthesises first)
            return [f"# selection protocol {name} (held_out_forgery): {self.describe(name, config, study)}. The "
                    f"study trains those families again itself, without {', '.join(config.hold_out)}, once the "
                    f"source data exists (rerun --dry-run then for their commands: {e})"]  # fmt: skip
        keep = ("clip-train", "mergekit-clip stats", "mergekit-yaml", "clip-eval soup")
        lines = [f"# selection protocol {name} (held_out_forgery): the study trains these families itself, on "
                 f"{', '.join(shadow.data.sources)} (derived JSONs in {derived.json_root}):"]  # fmt: skip
        lines += [line for line in plan_commands(shadow, study_file) if line.startswith(keep)]
        lines.append(f"# then every model above is scored on {', '.join(derived.eval)} "
                     f"({shadow.data.val_split} split): the held-out groups' fakes against the source val reals")
        return lines


PROTOCOL = HeldOutForgery()
