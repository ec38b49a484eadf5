"""Model cards: a ``README.md`` in the Hugging Face model-card format for every detector the project writes.

YAML front matter (``library_name``, ``tags``, ``base_model`` with ``base_model_relation``, ``datasets``,
``pipeline_tag`` and, when scores are known, ``model-index``) followed by what the detector is, how it was made
(training options, the merge recipe, the soup's ingredients, the import source), how to load it, and its scores
with their intervals. mergekit's own card for LLM merges lists ``base_model`` (the merged models), the tags
``mergekit`` and ``merge`` and the recipe as YAML; ours keeps those fields for merges.

Scores come from the detector's provenance (a clip-train ingredient's held-out val scores) and, after the fact,
from a ``clip-eval`` ``report.json`` or a ``study.json`` (``mergekit-clip card DIR --scores FILE``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CARD_NAME = "README.md"
TAGS = ["mergekit-clip", "deepfake-detection", "clip", "vision"]


@dataclass(frozen=True)
class CardScore:
    """One number on the card: ``metric`` (a registered metric name) of the detector on ``dataset``/``split``."""

    dataset: str
    split: str
    metric: str
    value: float
    low: float | None = None
    high: float | None = None
    source: str = ""  # where the number comes from: "clip-train held-out", "clip-eval report.json", "study.json"


def detector_kind(provenance: Mapping[str, Any]) -> str:
    """``merge``, ``soup``, ``ingredient``, ``base``, ``import`` or ``detector`` (from what the provenance says)."""
    if "merge" in provenance:
        return "merge"
    if "soup" in provenance:
        return "soup"
    if provenance.get("role") == "base":
        return "base"
    if provenance.get("recipe") == "clip-train":
        return "ingredient"
    if "import" in provenance:
        return "import"
    return "detector"


def card_provenance(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """What a ``config.json`` of any of our layouts says about the detector's origin: our ``provenance``, an HF
    export's ``detector_provenance``, a plugin merge's ``mergekit_clip.merge`` (HF layouts)."""
    from mergekit_clip.detector.layouts import HF_PROVENANCE_KEY

    provenance = dict(cfg.get("provenance") or cfg.get(HF_PROVENANCE_KEY) or {})
    merge = (cfg.get("mergekit_clip") or {}).get("merge")
    if merge and "merge" not in provenance:
        provenance["merge"] = merge
    return provenance


def provenance_scores(provenance: Mapping[str, Any]) -> list[CardScore]:
    """The held-out scores a clip-train ingredient records (its source val split)."""
    held = provenance.get("heldout") or {}
    out = []
    for metric, key in (("frame_auc", "auc"), ("acc", "acc")):
        if isinstance(held.get(key), (int, float)):
            dataset = held.get("dataset") or "?"
            out.append(CardScore(str(dataset), str(held.get("split", "val")), metric, float(held[key]),
                                 source="clip-train held-out"))  # fmt: skip
    return out


def _front_matter(spec, provenance: Mapping[str, Any], kind: str, scores: Sequence[CardScore], hf: bool) -> dict:
    tags = list(TAGS) + (["merge", "mergekit"] if kind == "merge" else []) + (["model-soup"] if kind == "soup" else [])
    meta: dict[str, Any] = {"library_name": "transformers" if hf else "mergekit-clip", "pipeline_tag":
                            "image-classification", "tags": tags}  # fmt: skip
    bases = _base_models(provenance, kind)
    if bases:
        meta["base_model"] = bases
        meta["base_model_relation"] = {"merge": "merge", "soup": "merge"}.get(kind, "finetune")
    datasets = _datasets(provenance)
    if datasets:
        meta["datasets"] = datasets
    if scores:
        results = []
        for s in scores:
            metric = {"type": s.metric, "name": s.metric, "value": round(s.value, 6)}
            results.append({"task": {"type": "image-classification", "name": "deepfake detection"},
                            "dataset": {"name": s.dataset, "type": s.dataset, "split": s.split},
                            "metrics": [metric]})  # fmt: skip
        meta["model-index"] = [{"name": str(provenance.get("name") or "detector"), "results": results}]
    return meta


def _base_models(provenance: Mapping[str, Any], kind: str) -> list[str]:
    if kind == "merge":
        merge = provenance["merge"]
        return sorted(str(m) for m in merge.get("models", []))  # mergekit plans from a set: fix one order
    if kind == "soup":
        members = set((provenance.get("soup") or {}).get("members") or [])
        return [str(i.get("model_dir") or i.get("name")) for i in provenance.get("ingredients", [])
                if not members or i.get("name") in members]  # fmt: skip
    for key in ("pretrained", "base"):
        if provenance.get(key):
            return [str(provenance[key])]
    return []


def _datasets(provenance: Mapping[str, Any]) -> list[str]:
    found = provenance.get("train_dataset")
    if found is None and isinstance(provenance.get("heldout"), Mapping):
        found = provenance["heldout"].get("dataset")
    if found is None:
        return []
    return [str(d) for d in (found if isinstance(found, list) else [found])]


def _what_it_is(spec) -> str:
    b = spec.backbone
    head = "no forensic head (a merge base)" if spec.head is None else (
        f"a {spec.head.num_classes}-logit linear head on the {spec.head.feature} feature"
        + (" (L2-normalised)" if spec.head.normalize else ""))  # fmt: skip
    extra = getattr(spec, "adapter", None)
    adapter = "" if extra is None else f", with an adapter ({extra.model_dump(mode='json')})"
    pre = spec.preprocess
    return (f"A CLIP ViT deepfake detector: width {b.width}, {b.layers} layers, {b.heads} heads, patch {b.patch_size}, "
            f"{b.image_size} px input, {b.act} activation; {head}{adapter}.\n\n"
            "Labels: 0 = real, 1 = fake; the score is the softmax probability of `fake`. Preprocessing: resize to "
            f"{pre.image_size} px ({pre.interpolation}), mean {list(pre.mean)}, std {list(pre.std)}.")  # fmt: skip


def _how_made(provenance: Mapping[str, Any], kind: str, recipe: str | None) -> str:
    if kind == "merge":
        merge = provenance["merge"]
        text = f"Merged with mergekit `{merge.get('method')}` through the mergekit-clip plugin"
        if merge.get("base_model"):
            text += f" (base `{merge['base_model']}`)"
        text += ":\n\n" + "\n".join(f"- `{m}`" for m in sorted(map(str, merge.get("models", []))))
        if merge.get("head_policy"):
            text += f"\n\nHead policy: {merge['head_policy']}."
        if recipe:
            text += f"\n\nThe recipe (`mergekit-yaml` reproduces the merge from it):\n\n```yaml\n{recipe.strip()}\n```"
        return text
    if kind == "soup":
        soup = provenance.get("soup") or {}
        members = soup.get("members") or [str(i.get("name")) for i in provenance.get("ingredients", [])]
        text = f"A {soup.get('method', '')} model soup (the members' weights averaged) of: {', '.join(members)}."
        if soup.get("method") == "greedy":
            text += f" Members chosen greedily on {soup.get('val_dataset')}/{soup.get('val_split', 'val')}."
        return text
    if kind == "ingredient":
        keep = {k: provenance[k] for k in ("mode", "seed", "lr", "weight_decay", "augment_strength", "train_dataset",
                                           "base", "pretrained", "train_seconds") if k in provenance}  # fmt: skip
        return ("Trained by `clip-train`:\n\n```yaml\n" + yaml.safe_dump(keep, sort_keys=False).strip() + "\n```")
    if kind == "import":
        report = provenance["import"]
        return f"Imported by `mergekit-clip import` from `{report.get('source', '?')}` ({report.get('importer', '?')})."
    if kind == "base":
        return "The shared starting point of a `clip-train` family (the base of its task vectors)."
    return "Written by mergekit-clip."


def _how_to_load(hf: bool) -> str:
    if hf:
        return ("```python\nfrom mergekit_clip.detector.io import load_detector  # head and preprocessing included\n"
                "model = load_detector(\"PATH\")\np_fake = model.fake_probability(images)  # images: B x 3 x H x W\n"
                "```\n\nThe tower alone loads in transformers (`CLIPVisionModelWithProjection.from_pretrained`); "
                "the forensic head rides in `head.*` tensors and `detector_head` in config.json.")  # fmt: skip
    return ("```python\nfrom mergekit_clip.detector.io import load_detector\nmodel = load_detector(\"PATH\")\n"
            "p_fake = model.fake_probability(images)  # images: B x 3 x H x W, preprocessed as above\n```\n\n"
            "Score it cross-dataset: `clip-eval PATH --datasets Celeb-DF-v2 DFDC --json-root J --data-root D`.")


def _scores_table(scores: Sequence[CardScore]) -> str:
    if not scores:
        return "No scores recorded yet: `mergekit-clip card PATH --scores report.json` adds them from clip-eval."
    lines = ["| dataset | split | metric | value | 95 % interval | from |", "|---|---|---|---|---|---|"]
    for s in scores:
        interval = f"[{s.low:.4f}, {s.high:.4f}]" if s.low is not None and s.high is not None else ""
        lines.append(f"| {s.dataset} | {s.split} | {s.metric} | {s.value:.4f} | {interval} | {s.source} |")
    return "\n".join(lines)


def card_text(spec, provenance: Mapping[str, Any], *, scores: Sequence[CardScore] = (), recipe: str | None = None,
              hf: bool = False) -> str:  # fmt: skip
    """The whole card: front matter + body."""
    kind = detector_kind(provenance)
    scores = [*provenance_scores(provenance), *scores]
    meta = _front_matter(spec, provenance, kind, scores, hf)
    title = {"merge": "Merged CLIP deepfake detector", "soup": "CLIP deepfake detector soup",
             "ingredient": "Fine-tuned CLIP deepfake detector", "base": "CLIP detector base",
             "import": "Imported CLIP deepfake detector"}.get(kind, "CLIP deepfake detector")  # fmt: skip
    body = [f"# {title}", "", "## What it is", "", _what_it_is(spec), "", "## How it was made", "",
            _how_made(provenance, kind, recipe), "", "## How to load it", "", _how_to_load(hf), "", "## Scores", "",
            _scores_table(scores), ""]  # fmt: skip
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n\n" + "\n".join(body)


def write_card(folder: str | os.PathLike, spec, provenance: Mapping[str, Any], **options) -> Path:
    """Write ``folder/README.md`` (see :func:`card_text` for ``options``)."""
    path = Path(folder) / CARD_NAME
    path.write_text(card_text(spec, provenance, **options), encoding="utf-8")
    return path


def scores_from_file(file: str | os.PathLike, model: str) -> list[CardScore]:
    """``model``'s scores in a clip-eval ``report.json`` (every metric per dataset) or a ``study.json`` (frame and
    video AUC per test set, the held-out mean with its bootstrap interval); an error names the models it holds."""
    file = Path(file)
    doc = json.loads(file.read_text(encoding="utf-8"))
    if "results" in doc:  # clip-eval report.json
        rows = [r for r in doc["results"] if r.get("model") == model]
        known = sorted({str(r.get("model")) for r in doc["results"]})
        if not rows:
            raise ValueError(f"{file}: no results for model {model!r}; it holds {known}")
        out = []
        for r in rows:
            for metric in ("frame_auc", "video_auc", "eer", "ap", "acc"):
                if isinstance(r.get(metric), (int, float)):
                    out.append(CardScore(r["dataset"], "test", metric, float(r[metric]), source=file.name))
        return out
    if "models" in doc and "held_out_mean" in next(iter(doc["models"].values()), {}):  # study.json
        if model not in doc["models"]:
            raise ValueError(f"{file}: no model {model!r}; it holds {sorted(doc['models'])}")
        m = doc["models"][model]
        out = []
        for dataset, s in m["test"].items():
            for metric in ("frame_auc", "video_auc"):
                if s.get(metric) is not None:
                    out.append(CardScore(dataset, "test", metric, float(s[metric]), source=file.name))
        for level in ("frame", "video"):
            iv = m["held_out_mean"].get(level)
            if iv:
                out.append(CardScore("held-out mean", "test", f"{level}_auc", iv["estimate"], iv["low"], iv["high"],
                                     source=f"{file.name} (video bootstrap)"))  # fmt: skip
        return out
    raise ValueError(f"{file}: neither a clip-eval report.json nor a study.json")
