"""The boundary figure of a detector that predicts blending boundaries (ForensicsAdapter): per scored dataset one
row of panels, a fake frame, its forgery mask, the boundary target ``4 m (1 - m)`` of the blurred mask the model
was trained towards, and the boundary map the model predicts (``model.boundary_map``, no ground-truth gate).

The frame is the first fake frame of the dataset that has a mask file (else the first fake frame, with an empty
mask panel saying so), prepared as the model sees it (its own preprocessing; the mask resized and cropped with it).
A detector trained with the boundary gate (``gate_boundary``, the paper's default, and the original's released
weights) learned its map only inside the true boundary patches, so its map is drawn gated by them, as the original
does at test time, and the panel says so; one trained without the gate is drawn ungated (its own prediction).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from eval.provenance import slug
from mergekit_clip.data.deepfakebench import FrameRecord
from mergekit_clip.data.masks import boundary_patches, boundary_target, read_mask
from mergekit_clip.data.transforms import build_eval_transform, read_image


@dataclass
class BoundaryPanel:
    """One dataset's row: frame (S, S, 3) in [0, 1], mask and maps (S, S); ``mask`` None when the frame has none."""

    model: str
    dataset: str
    frame_path: str
    frame: np.ndarray
    mask: np.ndarray | None
    target: np.ndarray | None
    boundary: np.ndarray
    gated: bool = False


def trained_gated(config: dict) -> bool:
    """Whether a detector's ``config.json`` says its boundary head was trained gated (imports of the original: yes)."""
    provenance = config.get("provenance") or {}
    options = provenance.get("mode_options") or {}
    if "gate_boundary" in options:
        return bool(options["gate_boundary"])
    return (provenance.get("import") or {}).get("kind") == "forensics-adapter"


def predicts_boundaries(model) -> bool:
    return callable(getattr(model, "boundary_map", None))


def _pick(records: Sequence[FrameRecord]) -> FrameRecord | None:
    fakes = [r for r in records if r.label == 1]
    with_mask = next((r for r in fakes if r.mask is not None and Path(r.mask).is_file()), None)
    return with_mask or (fakes[0] if fakes else None)


@torch.no_grad()
def boundary_panel(
    model, records: Sequence[FrameRecord], model_name: str, dataset: str, gated: bool = False
) -> BoundaryPanel | None:
    """The panel row of ``dataset`` for ``model`` (None when the dataset has no fake frame); ``gated``: draw the map
    gated by the true boundary patches (:func:`mergekit_clip.data.masks.boundary_patches` of the mask)."""
    record = _pick(records)
    if record is None:
        return None
    transform = build_eval_transform(model.spec.preprocess)
    image = read_image(record.path)
    has_mask = record.mask is not None and Path(record.mask).is_file()
    mask = read_mask(record.mask if has_mask else None, *image.shape[:2])
    tensor, mask_t = transform.with_mask(image, mask)
    device = next(model.parameters()).device
    gate = None
    if gated:
        patch = model.spec.forensics_adapter.patch_size
        gate = boundary_patches(mask_t, patch=patch).flatten()[None].to(device)
    boundary = model.boundary_map(tensor[None].to(device), gate).float().cpu()[0]
    mean = torch.tensor(model.spec.preprocess.mean).view(3, 1, 1)
    std = torch.tensor(model.spec.preprocess.std).view(3, 1, 1)
    frame = (tensor * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
    return BoundaryPanel(
        model=model_name,
        dataset=dataset,
        frame_path=str(record.path),
        frame=frame,
        mask=mask_t.numpy() if has_mask else None,
        target=boundary_target(mask_t).numpy() if has_mask else None,
        boundary=boundary.numpy(),
        gated=gated,
    )


def write_boundary_figures(panels: Sequence[BoundaryPanel], directory: Path) -> list[str]:
    """``boundary_<model>.png`` per model: one row per dataset (frame, mask, target, predicted boundary)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for model in dict.fromkeys(p.model for p in panels):
        rows = [p for p in panels if p.model == model]
        fig, axes = plt.subplots(len(rows), 4, figsize=(10, 2.6 * len(rows)), squeeze=False)
        for ax_row, p in zip(axes, rows):
            shown = [
                (p.frame, f"{p.dataset}: fake frame", None),
                (p.mask, "forgery mask" if p.mask is not None else "no mask file", "gray"),
                (p.target, "target 4m(1-m), blurred m", "magma"),
                (p.boundary, "predicted, gated by true patches" if p.gated else "predicted boundary", "magma"),
            ]
            for ax, (img, title, cmap) in zip(ax_row, shown):
                if img is not None:
                    ax.imshow(img, cmap=cmap, vmin=None if cmap is None else 0.0, vmax=None if cmap is None else 1.0)
                ax.set_title(title, fontsize="small")
                ax.axis("off")
        fig.suptitle(f"blending boundaries: {model}", fontsize="medium")
        fig.tight_layout()
        name = f"boundary_{slug(model)}.png"
        fig.savefig(directory / name, dpi=100, bbox_inches="tight")
        plt.close(fig)
        written.append(name)
    return written
