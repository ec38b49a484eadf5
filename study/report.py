"""The study's outputs: ``study.json`` (every number + provenance), ``report.md`` and ``figures/``.

Columns are never mixed: "selected on source val" is what a user could have shipped; "oracle (best on test)" is
what test-set selection would report, shown beside it with the gap between them (the inflation test-set selection
buys). Intervals resample videos (:mod:`eval.bootstrap`); each soup and merge is compared with the val-selected
ingredient on the same resamples (paired), and the verdict reads helped / hurt / within noise.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
import numpy as np

from study.scores import SplitScores
from study.selection import ALL_MERGES, ALL_SOUPS, INGREDIENTS, best

LEVELS = ("frame", "video")


def _frames(scores: Mapping[str, SplitScores]):
    from eval.bootstrap import ScoredFrames

    return {d: ScoredFrames(labels=s.labels, scores=s.scores, video_ids=s.video_ids) for d, s in scores.items()}


def _interval(iv) -> dict[str, float]:
    return {"estimate": iv.estimate, "low": iv.low, "high": iv.high, "confidence": iv.confidence}


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


# long: study.json is one document; its sections are built in the order they reference each other (selection,
# test scores, intervals, verdicts), and each is a few lines
def build_study_json(
    study, run, result, test: dict[str, dict[str, SplitScores]], robustness: dict[str, Any] | None = None
) -> dict[str, Any]:
    from eval.bootstrap import paired_auc_difference, percentile_interval, resampled_auc, verdict

    b = study.bootstrap
    boot = {"n_boot": b.n_boot, "seed": b.seed, "confidence": b.confidence}
    held_out = list(study.data.test)
    sources = study.data.sources
    selection = result.selection
    source_val = result.selections.get("source_val", selection)
    models: dict[str, Any] = {}
    resampled: dict[str, np.ndarray] = {}  # model -> held-out mean frame AUC on every resample (proxy quality)
    for entry in result.entries:
        held = {d: test[entry.name][d] for d in held_out}
        intervals = {}
        for level in LEVELS:
            estimate, samples = resampled_auc(_frames(held), level=level, n_boot=b.n_boot, seed=b.seed)
            intervals[level] = _interval(percentile_interval(estimate, samples, b.confidence))
            if level == "frame":
                resampled[entry.name] = samples
        models[entry.name] = {
            "kind": entry.kind, "group": entry.group, "family": entry.family, "method": entry.method,
            "params": dict(entry.params),
            "path": str(entry.path), "model_sha256": entry.model_hash,
            "weights_sha256": run.hashes.weights_sha256(entry.path),
            "val": {"metric": source_val.metric, "score": source_val.val_scores[entry.name],
                    **({"tie_break": {"metric": source_val.tie_break, "value": _unsigned(source_val, entry.name)}}
                       if source_val.tie_break else {}),
                    **{d: {"frame_auc": s.auc("frame"), "video_auc": s.auc("video"), "frames": int(s.labels.size)}
                       for d, s in result.val[entry.name].items()}},
            "test": {d: {"frame_auc": s.auc("frame"), "video_auc": s.auc("video"), "frames": int(s.labels.size),
                         "videos": int(np.unique(s.video_ids).size)}
                     for d, s in test[entry.name].items()},
            "in_domain": {d: test[entry.name][d].auc("frame") for d in sources if d in test[entry.name]},
            "held_out_mean": intervals,
            "proxies": {name: p.scores.get(entry.name) for name, p in result.proxies.items()},
        }  # fmt: skip
    reference = selection.reference
    ref_held = _frames({d: test[reference][d] for d in held_out})
    for entry in result.entries:
        if entry.kind == "ingredient":
            continue
        held = _frames({d: test[entry.name][d] for d in held_out})
        diffs = {}
        for level in LEVELS:
            iv = paired_auc_difference(held, ref_held, level=level, **boot)
            diffs[level] = {**_interval(iv), "verdict": verdict(iv)}
        models[entry.name]["vs_reference"] = diffs
        family_ref = selection.family_reference.get(entry.family or "")
        if len(selection.family_reference) > 1 and family_ref is not None:  # the family's own best, if not global
            fam_held = _frames({d: test[family_ref][d] for d in held_out})
            within: dict[str, Any] = {"family": entry.family, "reference": family_ref}
            for level in LEVELS:
                iv = paired_auc_difference(held, fam_held, level=level, **boot)
                within[level] = {**_interval(iv), "verdict": verdict(iv)}
            models[entry.name]["vs_family_reference"] = within
    groups = []
    for group, names in selection.members.items():
        picked = selection.selected[group]
        oracle = best(names, {n: models[n]["held_out_mean"]["frame"]["estimate"] for n in names})
        picked_auc = models[picked]["held_out_mean"]["frame"]["estimate"]
        oracle_auc = models[oracle]["held_out_mean"]["frame"]["estimate"]
        groups.append({
            "group": group, "candidates": len(names), "selected_on_val": picked,
            "protocol": selection.protocol, "val_score": selection.val_scores[picked], "oracle_best_on_test": oracle,
            "selected_held_out": picked_auc, "oracle_held_out": oracle_auc, "gap": oracle_auc - picked_auc,
        })  # fmt: skip
    return _clean({
        "format": 1,
        "name": study.name,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": sources, "val_split": study.data.val_split, "test_datasets": held_out,
        "selection_metric": source_val.metric, "tie_break": source_val.tie_break,
        "selection_protocol": selection.protocol,
        "protocols": protocols_json(result, models, resampled, b.confidence),
        "bootstrap": {**boot, "resampling": "videos, stratified by label"},
        "reference": reference,
        "family_references": dict(selection.family_reference),
        "family_merges": dict(selection.family_merge),
        "groups": groups,
        "models": models,
        "merges": result.merges,
        "families": {n: str(p.output) for n, p in run.family_plans.items()},
        **({"robustness": robustness} if robustness is not None else {}),
        "provenance": {"study": study.model_dump(mode="json"), "versions": _versions()},
        "notes": {
            "selected_on_val": "picked by the selection metric on the source val split; no test split was read",
            "oracle": "best held-out mean frame AUC on the test sets: what test-set selection reports",
            "gap": "oracle minus selected: the inflation of selecting on the test sets",
            "held_out_mean": "mean over the held-out test datasets of each dataset's AUC",
        },
    })  # fmt: skip


def protocols_json(result, models: dict[str, Any], resampled: dict[str, np.ndarray], confidence: float) -> dict:
    """Per protocol: what it read, its picks per group, its proxy quality against held-out AUC (tau, rho, regret
    with video-bootstrap intervals on the shared resamples)."""
    from study.proxy_quality import compare_protocols, group_regret, overall_pick, proxy_quality
    from study.selection import select_by_scores

    held = {n: m["held_out_mean"]["frame"]["estimate"] for n, m in models.items()}
    out = {}
    baseline = result.proxies.get("source_val")
    base_selection = result.selections.get("source_val")
    for name, p in result.proxies.items():
        selection = result.selections.get(name) or select_by_scores(result.entries, p.scores, p.ties, p.metric,
                                                                    p.tie_break, name)  # fmt: skip
        versus = None
        if baseline is not None and base_selection is not None and name != "source_val":
            within = (selection.members, selection.selected, base_selection.selected)
            versus = compare_protocols(p.scores, baseline.scores, held, resampled, confidence, within)
        pick = overall_pick([e.name for e in result.entries], p.scores, p.ties)
        details = {k: v for k, v in p.details.items() if k != "counterparts"}
        out[name] = {
            "kind": p.kind, "metric": p.metric, "tie_break": p.tie_break, "transductive": p.transductive,
            "reads": p.reads, **details,
            "counterparts": p.details.get("counterparts"),
            "picks": dict(selection.selected),
            "quality": {**proxy_quality(p.scores, pick, held, resampled, confidence),
                        "within_groups": group_regret(selection.members, selection.selected, p.scores, held, resampled,
                                                      confidence),
                        **({"vs_source_val": versus} if versus else {})},
        }  # fmt: skip
    return out


def _unsigned(selection, name: str) -> float:
    """The tie-break metric's own value (selection stores it signed so that higher is better)."""
    from mergekit_clip.metrics import get_metric

    value = selection.tie_scores[name]
    return value if get_metric(selection.tie_break).higher_is_better else -value


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for package in ("mergekit-clip", "mergekit", "torch", "open_clip_torch", "numpy", "scikit-learn"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    return out


# ---------------------------------------------------------------- markdown


def _f(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _ci(iv: Mapping[str, Any]) -> str:
    return f"{_f(iv['estimate'])} [{_f(iv['low'])}, {_f(iv['high'])}]"


def _signed_ci(iv: Mapping[str, Any]) -> str:
    def s(v):
        return "n/a" if v is None else f"{v:+.4f}"

    return f"{s(iv['estimate'])} [{s(iv['low'])}, {s(iv['high'])}]"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def verdict_table(doc: dict[str, Any]) -> str:
    """One row per group: the candidate selected on source val, its intervals and its verdict."""
    models = doc["models"]
    pct = round(100 * doc["bootstrap"]["confidence"])
    rows = []
    for g in doc["groups"]:
        m = models[g["selected_on_val"]]
        vs = m.get("vs_reference")
        in_domain = ", ".join(_f(v) for v in m["in_domain"].values()) or "n/a"
        rows.append([
            g["group"], g["selected_on_val"], _f(g["val_score"]), in_domain, _ci(m["held_out_mean"]["frame"]),
            _ci(m["held_out_mean"]["video"]),
            _signed_ci(vs["frame"]) if vs else "(reference)", vs["frame"]["verdict"] if vs else "",
            _signed_ci(vs["video"]) if vs else "", vs["video"]["verdict"] if vs else "",
        ])  # fmt: skip
    header = ["group", _picked_by(doc), f"{_score_label(doc)}", "in-domain AUC",
              f"held-out mean frame AUC [{pct}% CI]", f"held-out mean video AUC [{pct}% CI]",
              f"frame Δ vs {_picked_word(doc)} ingredient", "verdict", "video Δ", "verdict"]  # fmt: skip
    return _table(header, rows)


def family_table(doc: dict[str, Any]) -> str | None:
    """Each merge group and soup against its own family's val-picked ingredient (studies of several families)."""
    rows = []
    for g in doc["groups"]:
        m = doc["models"][g["selected_on_val"]]
        vs = m.get("vs_family_reference")
        if vs is None or g["group"] in ("any merge", "any soup"):
            continue
        ref = doc["models"][vs["reference"]]["held_out_mean"]["frame"]["estimate"]
        rows.append([g["group"], vs["family"], vs["reference"], _f(ref), g["selected_on_val"],
                     _f(m["held_out_mean"]["frame"]["estimate"]), _signed_ci(vs["frame"]), vs["frame"]["verdict"],
                     _signed_ci(vs["video"]), vs["video"]["verdict"]])  # fmt: skip
    if not rows:
        return None
    header = ["group", "family", f"family's {_picked_word(doc)} ingredient", "its held-out AUC", _picked_by(doc),
              "held-out AUC", "frame Δ vs family's ingredient", "verdict", "video Δ", "verdict"]  # fmt: skip
    return _table(header, rows)


def _picked_by(doc: dict[str, Any]) -> str:
    protocol = doc.get("selection_protocol", "source_val")
    return "selected on source val" if protocol == "source_val" else f"selected by {protocol}"


def _picked_word(doc: dict[str, Any]) -> str:
    protocol = doc.get("selection_protocol", "source_val")
    return "val-picked" if protocol == "source_val" else f"{protocol}-picked"


def _score_label(doc: dict[str, Any]) -> str:
    protocol = doc.get("selection_protocol", "source_val")
    if protocol == "source_val":
        return f"val {doc['selection_metric']}"
    return f"{protocol} {doc['protocols'][protocol]['metric']}"


def _q(iv: Mapping[str, Any] | None, signed: bool = True) -> str:
    if not iv or iv.get("estimate") is None:
        return "n/a"
    fmt = "{:+.3f}" if signed else "{:.3f}"
    if iv.get("low") is None:
        return fmt.format(iv["estimate"])
    return f"{fmt.format(iv['estimate'])} [{fmt.format(iv['low'])}, {fmt.format(iv['high'])}]"


def protocol_table(doc: dict[str, Any], transductive: bool = False) -> str | None:
    """Proxy quality per protocol: tau and rho against held-out AUC, the overall pick and its regret."""
    rows = []
    for name, p in doc.get("protocols", {}).items():
        if p["transductive"] != transductive:
            continue
        q = p["quality"]
        drives = " (drives the verdicts)" if name == doc.get("selection_protocol") else ""
        pick = f"`{q['pick']}` ({_f(q.get('pick_held_out'))})" if q.get("pick_held_out") is not None else "n/a"
        within = q.get("within_groups") or {}
        hits = f"{within['oracle_picks']}/{within['groups']}" if within.get("groups") else "n/a"
        rows.append([f"{name}{drives}", p["reads"], str(q["models"]), _q(q["kendall_tau"]), _q(q["spearman_rho"]),
                     pick, _q(q["regret"], signed=False), _q(within.get("mean_regret"), signed=False), hits,
                     _q((q.get("vs_source_val") or {}).get("kendall_tau")),
                     _q((q.get("vs_source_val") or {}).get("within_group_regret"))])  # fmt: skip
    if not rows:
        return None
    pct = round(100 * doc["bootstrap"]["confidence"])
    header = ["protocol", "reads", "models", f"Kendall tau [{pct}% CI]", f"Spearman rho [{pct}% CI]",
              "overall pick (held-out AUC)", f"regret [{pct}% CI]", f"mean regret within groups [{pct}% CI]",
              "groups picking their oracle", "Δ tau vs source_val", "Δ within-group regret vs source_val"]  # fmt: skip
    return _table(header, rows)


def picks_table(doc: dict[str, Any], transductive: bool = False) -> str | None:
    """Each group's pick under every protocol, with its held-out mean frame AUC."""
    names = [n for n, p in doc.get("protocols", {}).items() if p["transductive"] == transductive]
    if not names:
        return None
    models = doc["models"]
    rows = []
    for g in doc["groups"]:
        cells = [g["group"]]
        for n in names:
            pick = doc["protocols"][n]["picks"].get(g["group"])
            cells.append("n/a" if pick is None else
                         f"`{pick}` ({_f(models[pick]['held_out_mean']['frame']['estimate'])})")  # fmt: skip
        cells.append(f"`{g['oracle_best_on_test']}` ({_f(g['oracle_held_out'])})")
        rows.append(cells)
    return _table(["group", *names, "oracle (best on test)"], rows)


def protocol_markdown(doc: dict[str, Any]) -> list[str]:
    if len(doc.get("protocols", {})) < 2:
        return []
    honest, trans = protocol_table(doc), protocol_table(doc, transductive=True)
    lines = [
        "## Which selection proxy sees generalisation? (selection protocols side by side)", "",
        f"Verdicts above use the picks of **{doc['selection_protocol']}** (`selection.protocol`). Over every model "
        "a protocol scores: Kendall tau and Spearman rho between its proxy score and the held-out mean frame AUC, "
        "and the regret (best held-out AUC of any model minus its pick's); within groups (each method's grid, the "
        "ingredients, each soup: where a saturated val cannot choose), the mean regret of each group's pick and how "
        "many groups pick their own oracle; Δ columns: the protocol minus source_val on the same resamples (tau "
        "over the models both score; a negative regret Δ is better). Intervals: the video bootstrap, on the "
        "resamples of every other interval here (proxy scores fixed). No honest protocol read a test label.", "",
        honest or "", "",
    ]  # fmt: skip
    if trans:
        lines += ["### Transductive (reads the test frames, not their labels; never used for the verdicts)", "",
                  trans, ""]  # fmt: skip
    lines += ["### Picks per group (held-out mean frame AUC)", "", picks_table(doc) or "", ""]
    if trans:
        lines += ["Transductive picks:", "", picks_table(doc, transductive=True) or "", ""]
    return lines


def inflation_table(doc: dict[str, Any]) -> str:
    rows = [[g["group"], g["selected_on_val"], _f(g["selected_held_out"]), g["oracle_best_on_test"],
             _f(g["oracle_held_out"]), f"{g['gap']:+.4f}", str(g["candidates"])] for g in doc["groups"]]  # fmt: skip
    header = ["group", _picked_by(doc), "its held-out AUC", "oracle (best on test)", "oracle held-out AUC",
              "gap (inflation)", "candidates"]  # fmt: skip
    return _table(header, rows)


def models_table(doc: dict[str, Any]) -> str:
    tests = doc["test_datasets"]
    rows = []
    for name, m in doc["models"].items():
        per = [_f(m["test"][d]["frame_auc"]) for d in tests]
        rows.append([m["kind"], name, _f(m["val"]["score"]), *per, _ci(m["held_out_mean"]["frame"]),
                     _ci(m["held_out_mean"]["video"])])  # fmt: skip
    header = ["kind", "model", f"val {doc['selection_metric']}", *tests, "held-out mean frame AUC",
              "held-out mean video AUC"]  # fmt: skip
    return _table(header, rows)


def write_markdown(doc: dict[str, Any], file: Path, figures: list[str], robustness: str = "") -> None:
    b = doc["bootstrap"]
    within = family_table(doc)
    lines = [
        f"# Study: {doc['name']}",
        "",
        f"Source {', '.join(doc['source'])} (selection on its `{doc['val_split']}` split by {doc['selection_metric']};"
        f" in-domain AUC = its test split); held-out test sets: {', '.join(doc['test_datasets'])}.",
        *([f"Models tied on val {doc['selection_metric']} are ordered by val {doc['tie_break']} (same frames)."]
          if doc.get("tie_break") else []),
        f"Intervals: {round(100 * b['confidence'])}% percentile bootstrap, {b['n_boot']} resamples of videos "
        f"(stratified by label, seed {b['seed']}); Δ = paired difference against the {_picked_word(doc)} ingredient "
        f"**{doc['reference']}** on the same resamples.",
        f"Selection protocol for the verdicts: **{doc.get('selection_protocol', 'source_val')}** "
        f"({doc['protocols'][doc.get('selection_protocol', 'source_val')]['reads']}).",
        "",
        f"## Did merging help? (each group's candidate {_picked_by(doc)})",
        "",
        verdict_table(doc),
        "",
        *([f"## Within each family (against the family's own {_picked_word(doc)} ingredient)", "",
            "Does merging a family beat its best member? (e.g. specialists merged against the best specialist)", "",
            within, ""] if within else []),
        *protocol_markdown(doc),
        f"## {_picked_by(doc).capitalize()} vs oracle (best on test)",
        "",
        "The oracle column is what selecting on the test sets would report; the gap is that inflation.",
        "",
        inflation_table(doc),
        "",
        "## Every model (test-set numbers; never used for selection)",
        "",
        models_table(doc),
        "",
        *([robustness, ""] if robustness else []),
    ]
    if figures:
        lines += ["## Figures", ""] + [f"![{Path(f).stem}]({f})" for f in figures] + [""]
    file.write_text("\n".join(lines))


# ---------------------------------------------------------------- figures


def _roc_models(doc: dict[str, Any]) -> list[str]:
    """Few enough ROC curves to tell apart: the val-selected ingredient and the oracle ingredient (the references),
    the val-selected merge and soup over every group, and per family its val-picked ingredient and merge or soup.
    Every other group's pick is in the tables and the dot plot."""
    models, groups = doc["models"], {g["group"]: g for g in doc["groups"]}
    names = [doc["reference"], groups[INGREDIENTS]["oracle_best_on_test"]]
    for kind, overall in (("merge", ALL_MERGES), ("soup", ALL_SOUPS)):  # "any merge" / "any soup", or the only group
        picks = [g["selected_on_val"] for g in doc["groups"] if models[g["selected_on_val"]]["kind"] == kind]
        names += [groups[overall]["selected_on_val"]] if overall in groups else picks[:1]
    for family, reference in doc["family_references"].items():
        names += [reference, *([doc["family_merges"][family]] if family in doc["family_merges"] else [])]
    return list(dict.fromkeys(names))


def write_figures(doc: dict[str, Any], test: dict[str, dict[str, SplitScores]], directory: Path) -> list[str]:
    """Every figure of the report, each redrawn only when what it shows changed (:mod:`study.figure_cache`)."""
    from eval.predict import Predictions
    from eval.report import slug, write_roc
    from study import figures
    from study.figure_cache import FigureCache, array_digest

    directory.mkdir(parents=True, exist_ok=True)
    cache = FigureCache(directory)
    models = doc["models"]
    written = []
    picked = {g["selected_on_val"] for g in doc["groups"]}
    rows = [{"name": n, "kind": m["kind"], "selected": n in picked,
             **{k: m["held_out_mean"]["frame"][k] for k in ("estimate", "low", "high")}}
            for n, m in models.items()]  # fmt: skip
    written.append(cache.draw("did_merging_help.png", [rows, doc["reference"]],
                              lambda out: figures.plot_did_merging_help(rows, doc["reference"], out)))  # fmt: skip
    merges = [(n, m) for n, m in models.items() if m["kind"] == "merge"]
    candidates = [{"method": m["group"], "name": n, "params": m["params"], "val": m["val"]["score"],
                   "test": m["held_out_mean"]["frame"]["estimate"], "selected": n in picked}
                  for n, m in merges]  # fmt: skip
    if candidates:
        written.append(cache.draw("val_vs_test.png", candidates,
                                  lambda out: figures.plot_val_vs_test(candidates, out)))  # fmt: skip
    if len(doc.get("protocols", {})) > 1:
        panels = [{"protocol": name, "metric": p["metric"], "transductive": p["transductive"],
                   "pick": p["quality"]["pick"], "tau": (p["quality"]["kendall_tau"] or {}).get("estimate"),
                   "regret": (p["quality"]["regret"] or {}).get("estimate"),
                   "points": [{"name": n, "kind": m["kind"], "proxy": m["proxies"].get(name),
                               "held_out": m["held_out_mean"]["frame"]["estimate"]} for n, m in models.items()]}
                  for name, p in doc["protocols"].items()]  # fmt: skip
        written.append(cache.draw("proxy_vs_held_out.png", panels,
                                  lambda out: figures.plot_proxy_vs_held_out(panels, out)))  # fmt: skip
    for group in dict.fromkeys(c["method"] for c in candidates):
        members = [c for c in candidates if c["method"] == group]
        for param in members[0]["params"]:
            if len({str(c["params"].get(param)) for c in members}) > 1:
                others = {str(sorted((k, str(v)) for k, v in c["params"].items() if k != param)) for c in members}
                shown = members if len(others) < len(members) else [  # a search: every trial its own combination,
                    {**c, "params": {param: c["params"][param]}} for c in members  # so one line against param
                ]  # fmt: skip
                written.append(cache.draw(f"sweep_{group}_{param}.png", [shown, param],
                                          lambda out, m=shown, g=group, p=param:
                                          figures.plot_param_sweep(m, g, p, out)))  # fmt: skip
    by_dataset: dict[str, list] = {}
    for name in _roc_models(doc):
        kind = models[name]["kind"]
        for dataset, s in test[name].items():
            by_dataset.setdefault(dataset, []).append(
                Predictions(model=name, dataset=dataset, paths=[""] * s.labels.size, labels=s.labels,
                            video_ids=list(s.video_ids), scores=s.scores, ok=np.ones(s.labels.size, bool),
                            meta={"selection": kind}))  # fmt: skip
    for dataset, group in by_dataset.items():
        shown = [[p.model, p.meta["selection"], array_digest(p.labels, p.scores)] for p in group]
        written.append(cache.draw(f"roc_{slug(dataset)}.png", shown,
                                  lambda out, g=group, d=dataset: write_roc(g, d, out.parent)))  # fmt: skip
    cache.save()
    return [str(Path(p).relative_to(directory.parent)) for p in written]


def write_outputs(study, run, result, test, doc: dict[str, Any]) -> None:
    out = study.output
    try:
        figures = write_figures(doc, test, out / "figures")
    except ImportError as e:  # figures are optional output; the numbers are not
        click.echo(f"warning: figures skipped ({e})", err=True)
        figures = []
    robustness = ""
    if doc.get("robustness"):
        from study.robustness import write_robustness_outputs

        robustness, robust_figures = write_robustness_outputs(doc["robustness"], out / "robustness")
        figures = figures + robust_figures
    doc["figures"] = figures
    write_markdown(doc, out / "report.md", figures, robustness)


def print_summary(doc: dict[str, Any]) -> None:
    click.echo(f"\nDid merging help? ({_picked_by(doc)}; reference = {doc['reference']})\n")
    click.echo(verdict_table(doc))
    within = family_table(doc)
    if within:
        click.echo("\nWithin each family (against the family's own val-picked ingredient):\n")
        click.echo(within)
    if len(doc.get("protocols", {})) > 1:
        click.echo(f"\nSelection protocols (verdicts use {doc['selection_protocol']}): proxy vs held-out AUC\n")
        click.echo(protocol_table(doc))
        trans = protocol_table(doc, transductive=True)
        if trans:
            click.echo("\nTransductive (test frames read without labels; never used for the verdicts):\n")
            click.echo(trans)
    click.echo(f"\n{_picked_by(doc).capitalize()} vs oracle (best on test):\n")
    click.echo(inflation_table(doc))
    if doc.get("robustness"):
        from study.robustness import robustness_table

        r = doc["robustness"]
        click.echo(f"\nIs the merge more robust? ({len(r['perturbations'])} perturbed conditions on "
                   f"{', '.join(r['datasets'])}; Δ vs the val-selected ingredient):\n")  # fmt: skip
        click.echo(robustness_table(r))
    timings = doc.get("timings_s") or {}
    if timings:
        click.echo("\n" + ", ".join(f"{k} {v}" for k, v in timings.items()))
