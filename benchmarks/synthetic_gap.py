"""Cross-dataset gap of the synthetic benchmark: train a simple detector on the train dataset, score every dataset.

    python benchmarks/synthetic_gap.py [--preset small] [--seed 0] [--size 32] [--epochs 30]

Prints one JSON line per test dataset with frame AUC of (a) a tiny CNN and (b) logistic regression on
downsampled pixels, both trained on ``SynthInfo.train_dataset``'s train split, epoch chosen on its val split.
In-domain = the train dataset's test split; the others are cross-dataset.
"""

from __future__ import annotations

import json
import tempfile

import click
import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from torch import nn

from mergekit_clip.config import PreprocessSpec
from mergekit_clip.data.deepfakebench import load_frames
from mergekit_clip.data.synthetic import synthesize
from mergekit_clip.data.transforms import FrameDataset, build_eval_transform, build_train_transform


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


@click.command()
@click.option("--preset", default="small", type=click.Choice(["small", "full"]))
@click.option("--seed", default=0, type=int)
@click.option("--size", default=32, type=int, help="detector input side, pixels")
@click.option("--epochs", default=30, type=int)
def main(preset: str, seed: int, size: int, epochs: int) -> None:
    torch.manual_seed(seed)
    pre = PreprocessSpec(image_size=size)
    with tempfile.TemporaryDirectory() as tmp:
        info = synthesize(f"{tmp}/synth", preset, seed)
        roots = {"json_root": info.json_root, "data_root": info.data_root}
        train = load_frames(info.train_dataset, "train", **roots)
        x_tr, y_tr = _tensors(train, build_eval_transform(pre))
        x_va, y_va = _tensors(load_frames(info.train_dataset, "val", **roots), build_eval_transform(pre))
        tests = {d: _tensors(load_frames(d, "test", **roots), build_eval_transform(pre)) for d in info.datasets}
        aug = build_train_transform(pre, strength=0.5, seed=seed)
        train_ds = FrameDataset(train, aug)

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
                "preset": preset,
                "seed": seed,
                "input_px": size,
                "val_auc_selected": round(float(best), 4),
            }
            print(json.dumps(row))


if __name__ == "__main__":
    main()
