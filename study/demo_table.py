"""The demo's answer to "did merging help?": a compact table from a ``clip-eval`` report.

Rows are ingredients, soups and merges; columns are the mean frame AUC over the held-out (cross-dataset) test
sets, the in-domain test AUC and the held-out mean video AUC. The verdict compares the best soup and the best
merge against the ingredient an honest user would have picked: the best on its source-domain validation split
(``provenance.heldout``), not the best on the test sets (that "oracle" is shown too, for reference).
"""

from __future__ import annotations

import json
from pathlib import Path
from statistics import fmean


def _mean(values: list[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return fmean(defined) if defined else None


def _fmt(value: float | None) -> str:
    return "  n/a " if value is None else f"{value:.4f}"


def _heldout_auc(model_dir: str | None) -> float | None:
    if not model_dir:
        return None
    try:
        provenance = json.loads((Path(model_dir) / "config.json").read_text()).get("provenance") or {}
    except (OSError, json.JSONDecodeError):
        return None
    return (provenance.get("heldout") or {}).get("auc")


def comparison_table(report: dict, test_sets: list[str], train_dataset: str) -> str:
    cell = {(r["model"], r["dataset"]): r for r in report["results"]}
    rows = []
    for model, info in report["models"].items():
        cross = _mean([(cell.get((model, d)) or {}).get("frame_auc") for d in test_sets])
        video = _mean([(cell.get((model, d)) or {}).get("video_auc") for d in test_sets])
        in_domain = (cell.get((model, train_dataset)) or {}).get("frame_auc")
        rows.append(
            {
                "model": model,
                "kind": info.get("kind", "?"),
                "cross": cross,
                "video": video,
                "in_domain": in_domain,
                "val": _heldout_auc(info.get("model_dir")),
            }
        )
    width = max([len(r["model"]) for r in rows] + [5])
    lines = [
        f"{'kind':<12} {'model':<{width}}  held-out mean AUC  {train_dataset} AUC  held-out video AUC  val AUC",
        "-" * (width + 78),
    ]
    for r in rows:
        in_domain = f"{_fmt(r['in_domain']):>{len(train_dataset) + 4}}"
        lines.append(
            f"{r['kind']:<12} {r['model']:<{width}}  {_fmt(r['cross']):>17}  {in_domain}"
            f"  {_fmt(r['video']):>18}  {_fmt(r['val']):>7}"
        )
    lines.append("")
    lines.extend(verdict(rows))
    return "\n".join(lines)


def verdict(rows: list[dict]) -> list[str]:
    ingredients = [r for r in rows if r["kind"] == "ingredient" and r["cross"] is not None]
    if not ingredients:
        return ["no ingredient scores: nothing to compare"]
    picked = max(ingredients, key=lambda r: (r["val"] is not None, r["val"] or 0.0))
    oracle = max(ingredients, key=lambda r: r["cross"])
    out = [
        f"best single ingredient on its val split: {picked['model']} -> held-out mean AUC {_fmt(picked['cross'])}",
        f"(oracle: best ingredient on the test sets: {oracle['model']} -> {_fmt(oracle['cross'])})",
    ]
    for kind in ("soup", "merge"):
        group = [r for r in rows if r["kind"].startswith(kind) and r["cross"] is not None]
        if not group:
            continue
        best = max(group, key=lambda r: r["cross"])
        gain = best["cross"] - picked["cross"]
        # Differences below 1e-4 AUC are rounding, not an effect.
        word = "helped" if gain > 1e-4 else ("did not help" if gain < -1e-4 else "no change")
        out.append(
            f"best {kind}: {best['model']} -> {_fmt(best['cross'])} ({gain:+.4f} vs the val-picked ingredient: {word})"
        )
    return out
