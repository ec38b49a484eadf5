"""Cross-dataset gap of the synthetic benchmark: train detectors on the train dataset, score every dataset.

    python -m benchmarks.synthetic_gap [--preset small] [--seed 0] [--size 32] [--epochs 30]   # tiny CNN + logreg
    python -m benchmarks.synthetic_gap --vit [--out runs/gap] [--family-set key=value]   # demo family (clip-train)

Default: one JSON line per test dataset with frame AUC of (a) a tiny CNN and (b) logistic regression on
downsampled pixels, both trained on ``SynthInfo.train_dataset``'s train split, epoch chosen on its val split.
In-domain = the train dataset's test split; the others are cross-dataset.

``--vit`` runs the demo family as it ships (``train/configs/demo_family.yaml``; only the paths are redirected),
prints the wall time of every step, then one JSON line per ingredient: Synth-FF val AUC (what selection ranks
on), in-domain test AUC, each cross-dataset test AUC, and the held-out mean frame and video AUC with the
half-width of their 95 % video-bootstrap interval (``eval.bootstrap``); then a summary line (mean/min/max over
the trained ingredients, the full fine-tunes' smallest in-domain AUC and smallest in-domain minus cross gap).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from torch import nn

from mergekit_clip.data.formats import load_frames
from mergekit_clip.data.synthetic import SynthInfo, synthesize
from mergekit_clip.data.transforms import FrameDataset, build_eval_transform, build_train_transform
from mergekit_clip.detector.spec import PreprocessSpec

CONFIGS = Path(__file__).resolve().parent.parent / "train" / "configs"


def _tensors(records, transform) -> tuple[torch.Tensor, torch.Tensor]:
    ds = FrameDataset(records, transform)
    xs, ys = zip(*[(ds[i][0], ds[i][1]) for i in range(len(ds))])
    return torch.stack(xs), torch.tensor(ys)


def _cnn() -> nn.Module:
    def block(i: int, o: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))

    return nn.Sequential(block(3, 16), block(16, 32), block(32, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(64, 2))  # fmt: skip


def _scores(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return torch.softmax(model(x), 1)[:, 1].numpy()


def run_cnn(info: SynthInfo, size: int, epochs: int, seed: int) -> None:
    pre = PreprocessSpec(image_size=size)
    roots = {"json_root": info.json_root, "data_root": info.data_root}
    train = load_frames(info.train_dataset, "train", **roots)
    x_tr, y_tr = _tensors(train, build_eval_transform(pre))
    x_va, y_va = _tensors(load_frames(info.train_dataset, "val", **roots), build_eval_transform(pre))
    tests = {d: _tensors(load_frames(d, "test", **roots), build_eval_transform(pre)) for d in info.datasets}
    train_ds = FrameDataset(train, build_train_transform(pre, strength=0.5, seed=seed))

    model = _cnn()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-2)
    best, best_state = -1.0, None
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(train_ds))
        for i in range(0, len(perm), 32):
            items = [train_ds[int(j)] for j in perm[i : i + 32]]
            xb, yb = torch.stack([it[0] for it in items]), torch.tensor([it[1] for it in items])
            opt.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
        val_auc = roc_auc_score(y_va.numpy(), _scores(model, x_va))
        if val_auc > best:
            best, best_state = val_auc, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)

    logreg = LogisticRegression(C=0.1, max_iter=2000).fit(x_tr.flatten(1).numpy(), y_tr.numpy())
    for name, (x, y) in tests.items():
        lr_scores = logreg.predict_proba(x.flatten(1).numpy())[:, 1]
        row = {
            "dataset": name,
            "domain": "in-domain" if name == info.train_dataset else "cross-dataset",
            "frames": len(y),
            "cnn_auc": round(float(roc_auc_score(y.numpy(), _scores(model, x))), 4),
            "logreg_auc": round(float(roc_auc_score(y.numpy(), lr_scores)), 4),
            "preset": info.preset,
            "seed": info.seed,
            "input_px": size,
            "val_auc_selected": round(float(best), 4),
        }
        print(json.dumps(row))


def _timed(label: str, fn, times: dict):
    t0 = time.perf_counter()
    out = fn()
    times[label] = round(time.perf_counter() - t0, 1)
    print(json.dumps({"step": label, "wall_s": times[label]}), flush=True)
    return out


@torch.no_grad()
def _ingredient_scores(model_dir: Path, sets: dict, cache: dict) -> dict:
    """P(fake) of one detector dir on every (dataset, split) of ``sets``: {key: ScoredFrames} (eval transform)."""
    from eval.bootstrap import ScoredFrames
    from mergekit_clip.detector.io import load_detector

    model = load_detector(model_dir, "cpu").eval()
    pre = model.spec.preprocess
    out = {}
    for key, records in sets.items():
        if (key, pre.model_dump_json()) not in cache:
            cache[(key, pre.model_dump_json())] = _tensors(records, build_eval_transform(pre))
        x, y = cache[(key, pre.model_dump_json())]
        prob = torch.cat([model.fake_probability(x[i : i + 256]) for i in range(0, len(x), 256)])
        out[key] = ScoredFrames(y.numpy(), prob.float().numpy(), np.array([r.video_id for r in records]))
    return out


def run_vit(out: Path, preset: str, seed: int, family_set: list[str]) -> None:
    from eval.bootstrap import bootstrap_auc
    from train.config import load_config
    from train.sweep import run_sweep

    times: dict[str, float] = {}
    bench = _timed("synth", lambda: synthesize(out / "synth", preset, seed, overwrite=True), times)
    fam_cfg = load_config(CONFIGS / "demo_family.yaml", [
        f"output={out / 'family'}", f"data.json_root={bench.json_root}", f"data.data_root={bench.data_root}",
        *family_set,
    ])  # fmt: skip
    rows = _timed("clip_train_family", lambda: run_sweep(fam_cfg, overwrite=True), times)

    roots = {"json_root": bench.json_root, "data_root": bench.data_root}
    sets = {(d, "test"): load_frames(d, "test", **roots) for d in bench.datasets}
    sets[(bench.train_dataset, "val")] = load_frames(bench.train_dataset, "val", **roots)
    heldout = [d for d in bench.datasets if d != bench.train_dataset]
    print(json.dumps({"frames": {f"{k[0]}/{k[1]}": len(v) for k, v in sets.items()},
                      "videos": {f"{k[0]}/{k[1]}": len({r.video_id for r in v}) for k, v in sets.items()}}))
    cache: dict = {}
    tuned = []
    t0 = time.perf_counter()
    for row in [{"name": "base", "path": str(out / "family" / "base"), "mode": "base"}, *rows]:
        scored = _ingredient_scores(Path(row["path"]), sets, cache)
        auc = {k: round(bootstrap_auc({k[0]: v}, n_boot=1).estimate, 4) for k, v in scored.items()}
        cross = {d: scored[(d, "test")] for d in heldout}
        frame_ci = bootstrap_auc(cross, level="frame", seed=seed)
        video_ci = bootstrap_auc(cross, level="video", seed=seed)
        result = {
            "ingredient": row["name"],
            "mode": row["mode"],
            "val_auc": auc[(bench.train_dataset, "val")],
            "in_domain_auc": auc[(bench.train_dataset, "test")],
            "cross_mean_auc": round(frame_ci.estimate, 4),
            "cross_mean_half_width": round(frame_ci.half_width, 4),
            "cross_mean_video_auc": round(video_ci.estimate, 4),
            "cross_mean_video_half_width": round(video_ci.half_width, 4),
            **{d: auc[(d, "test")] for d in heldout},
        }
        print(json.dumps(result), flush=True)
        if row["mode"] != "base":
            tuned.append(result)
    times["score_and_bootstrap"] = round(time.perf_counter() - t0, 1)
    summary = {"summary": "ingredients (base excluded)", "n": len(tuned), **times}
    for key in ("val_auc", "in_domain_auc", "cross_mean_auc", "cross_mean_half_width", "cross_mean_video_half_width"):
        values = [r[key] for r in tuned]
        summary[key] = {"mean": round(float(np.mean(values)), 4), "min": min(values), "max": max(values)}
    ft = [r for r in tuned if r["mode"] == "full_finetune"]
    if ft:
        summary["full_finetune_gap"] = {
            "in_domain_min": min(r["in_domain_auc"] for r in ft),
            "gap_min": round(min(r["in_domain_auc"] - r["cross_mean_auc"] for r in ft), 4),
        }
    print(json.dumps(summary))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--preset", default="small", type=click.Choice(["small", "full"]))
@click.option("--seed", default=0, type=int)
@click.option("--size", default=32, type=int, help="CNN input side, pixels")
@click.option("--epochs", default=30, type=int, help="CNN epochs")
@click.option("--vit", is_flag=True, help="run the demo's tiny-ViT pre-training + family instead of the CNN")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="--vit: keep the runs here")
@click.option("--family-set", multiple=True, help="--vit: a clip-train --set override of demo_family.yaml")
def main(preset: str, seed: int, size: int, epochs: int, vit: bool, out: Path | None, family_set) -> None:
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        if vit:
            run_vit((out or Path(tmp)).absolute(), preset, seed, list(family_set))
        else:
            run_cnn(synthesize(f"{tmp}/synth", preset, seed), size, epochs, seed)


if __name__ == "__main__":
    main()
