"""``forensics_adapter``: ForensicsAdapter (Cui et al., CVPR 2025). The CLIP tower stays frozen; the adapter, the
fusion projections, the mask decoder, the intra-block refinement and the two heads train
(:mod:`mergekit_clip.detector.forensics_adapter`). The family's base is the adapter initialisation
(``head.init_seed``): every ingredient starts from it, so the family merges.

Loss, per micro-batch of frames with their forgery masks (``mergekit_clip.data.masks``; real frames: zeros):
``ce_weight * CE + boundary_weight * MSE(boundary, 4 b (1 - b)) + intra_weight * L_intra + alignment_weight * L_clip``
(paper: 10, 200, 20, 10), where ``b`` is the Gaussian-blurred mask and the predicted boundary map is gated to the
patches that hold a boundary (the original's ``if_boundary``). With ``tau`` = 0.5, per fake frame, ``e`` its
L2-normalised patch tokens, ``F`` = e x (patch forged), ``R`` = e x (not forged) (the masked-out rows stay as zeros,
as the original keeps them), summed over the fake frames of the batch:

* ``L_intra`` (adapter, after each of ``intra_blocks``, 16-px patch labels of the frame):
  ``-log(S(R R^T) / (S(F R^T) + S(R R^T)))``, ``S(M) = sum exp(M / tau)``;
* ``L_clip`` (the refinement's hidden tokens, patch labels of the mask at CLIP's grid): the same term, plus, when the
  batch holds both labels, ``-log(S(Re Re^T) / (S(Re Re^T) + S(Re Fk^T)))`` over min(#real, #fake) pairs of a real
  frame's tokens ``Re`` and a fake frame's ``Fk`` (the larger group drawn at random, as the original).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from mergekit_clip.data.masks import (
    PAPER_KERNEL_SIZE,
    PAPER_PATCH_THRESHOLD,
    PAPER_PIXEL_THRESHOLD,
    PAPER_SIGMA,
    boundary_patches,
    boundary_target,
    patch_labels,
)
from mergekit_clip.detector.spec import ForensicsAdapterSpec
from train.modes.registry import Adaptation, ModeOptions, TrainingMode

NAME = "forensics_adapter"


class ForensicsAdapterOptions(ModeOptions):
    adapter: ForensicsAdapterSpec = Field(
        ForensicsAdapterSpec(), description="adapter geometry (paper: ViT-tiny width 192, 8 blocks, 128 queries)"
    )
    ce_weight: float = Field(10.0, ge=0, description="weight of the cross-entropy (paper: 10)")
    boundary_weight: float = Field(200.0, ge=0, description="weight of the boundary-map MSE (paper: 200)")
    intra_weight: float = Field(20.0, ge=0, description="weight of the adapter's intra-frame loss (paper: 20)")
    alignment_weight: float = Field(10.0, ge=0, description="weight of the CLIP-side loss (paper: 10)")
    intra_blocks: tuple[int, ...] = Field((4, 5, 6), description="adapter blocks the intra loss reads (1-based)")
    temperature: float = Field(0.5, gt=0, description="tau of the intra/alignment terms (paper: 0.5)")
    gate_boundary: bool = Field(
        True,
        description="train the boundary map only on ground-truth boundary patches (the paper); the ungated map is "
        "then not a prediction elsewhere (see ForensicsAdapterDetector.boundary_map)",
    )
    blur_kernel_size: int = Field(PAPER_KERNEL_SIZE, gt=0, description="Gaussian blur of the mask (odd)")
    blur_sigma: float = Field(PAPER_SIGMA, ge=0, description="0 = OpenCV's rule for the kernel size")
    patch_threshold: float = Field(PAPER_PATCH_THRESHOLD, description="forged patch: white share above this")
    pixel_threshold: float = Field(PAPER_PIXEL_THRESHOLD, description="white pixel: mask value above this")

    def check_config(self, config) -> None:
        modes = list(config.sweep.modes)
        if NAME in modes and modes != [NAME]:
            raise ValueError(
                f"sweep.modes {modes}: a forensics_adapter family trains only forensics_adapter ingredients (its "
                "base is the saved adapter initialisation); train the other modes in a run of their own"
            )
        bad = [b for b in self.intra_blocks if not 1 <= b <= self.adapter.depth]
        if bad:
            raise ValueError(
                f"mode_options.forensics_adapter.intra_blocks {bad} are outside 1..adapter.depth ({self.adapter.depth})"
            )


def _exp_sum(a: torch.Tensor, b: torch.Tensor, tau: float) -> torch.Tensor:
    return torch.exp(torch.bmm(a, b.transpose(1, 2)) / tau).sum()


def intra_frame_loss(tokens: torch.Tensor, labels: torch.Tensor, patches: torch.Tensor, tau: float) -> torch.Tensor:
    """Real patches of fake frames pulled together, away from the forged ones (0 without a fake frame).

    ``tokens`` (B, L, D), ``labels`` (B,), ``patches`` (B, L) 1 = forged patch.
    """
    fake = labels == 1
    if not bool(fake.any()):
        return tokens.sum() * 0
    e = F.normalize(tokens[fake].float(), dim=-1)
    forged = patches[fake].float().unsqueeze(-1)
    forged_part, real_part = e * forged, e * (1 - forged)
    positive = _exp_sum(real_part, real_part, tau)
    return -torch.log(positive / (_exp_sum(forged_part, real_part, tau) + positive))


def inter_frame_loss(
    tokens: torch.Tensor, labels: torch.Tensor, tau: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Real frames' tokens pulled together, away from paired fake frames' (0 unless both labels are present); the
    larger group's frames are drawn with ``generator`` (CPU)."""
    real, fake = torch.nonzero(labels == 0).flatten(), torch.nonzero(labels == 1).flatten()
    if len(real) == 0 or len(fake) == 0:
        return tokens.sum() * 0
    n = min(len(real), len(fake))

    def draw(index: torch.Tensor) -> torch.Tensor:
        return index[torch.randperm(len(index), generator=generator)[:n].to(index.device)] if len(index) > n else index

    real, fake = draw(real), draw(fake)
    e = F.normalize(tokens.float(), dim=-1)
    positive = _exp_sum(e[real], e[real], tau)
    return -torch.log(positive / (positive + _exp_sum(e[real], e[fake], tau)))


def forensics_adapter_loss(model, options: ForensicsAdapterOptions, images, labels, ok, masks, generator=None):
    """``(per-frame cross-entropy (B,), total loss)`` of one micro-batch (skipped frames, ``ok`` False, left out)."""
    spec = model.spec if hasattr(model, "spec") else model.module.spec  # DDP wraps the detector
    fa, clip = spec.forensics_adapter, spec.backbone
    thresholds = {"threshold": options.patch_threshold, "pixel_threshold": options.pixel_threshold}
    masks = masks.float()
    gate = boundary_patches(masks, patch=fa.patch_size, **thresholds).flatten(1) if options.gate_boundary else None
    out = model(images, boundary_gate=gate, outputs=True)
    keep = ok.bool()
    per_frame = F.cross_entropy(out.logits.float(), labels, reduction="none")
    total = options.ce_weight * per_frame[keep].sum() / max(1, labels.numel())
    if options.boundary_weight:
        target = boundary_target(masks, kernel_size=options.blur_kernel_size, sigma=options.blur_sigma)
        error = (out.boundary[:, 0].float() - target) ** 2
        total = total + options.boundary_weight * error[keep].mean() if bool(keep.any()) else total
    y = labels[keep]
    if options.intra_weight:
        forged = patch_labels(masks, patch=fa.patch_size, **thresholds).flatten(1)[keep]
        intra = sum(intra_frame_loss(out.adapter_tokens[b - 1][keep], y, forged, options.temperature)
                    for b in options.intra_blocks)  # fmt: skip
        total = total + options.intra_weight * intra
    if options.alignment_weight:
        clip_masks = F.interpolate(masks[:, None], size=(clip.image_size,) * 2, mode="bilinear", align_corners=False)
        forged = patch_labels(clip_masks[:, 0], patch=clip.patch_size, **thresholds).flatten(1)[keep]
        tokens = out.clip_refine_tokens[keep]
        align = intra_frame_loss(tokens, y, forged, options.temperature) + inter_frame_loss(
            tokens, y, options.temperature, generator
        )
        total = total + options.alignment_weight * align
    return per_frame, total


def install_forensics_adapter(model, options: ForensicsAdapterOptions, seed: int) -> Adaptation:
    if getattr(model.spec, "forensics_adapter", None) is None:
        raise ValueError("mode forensics_adapter needs a ForensicsAdapter base (resolve_spec builds it)")
    for name, p in model.named_parameters():
        p.requires_grad_(not name.startswith("visual."))  # the CLIP tower never trains

    def batch_loss(ddp_model, images, labels, ok, masks, generator):
        return forensics_adapter_loss(ddp_model, options, images, labels, ok, masks, generator)

    return Adaptation(batch_loss=batch_loss)


MODE = TrainingMode(
    name=NAME,
    prefix="fa",
    options=ForensicsAdapterOptions,
    install=install_forensics_adapter,
    needs_masks=True,
    trains="ForensicsAdapter beside a frozen CLIP: ViT-tiny adapter + queries, fusion, mask decoder, refinement, "
    "heads (5.7 M at ViT-L/14); CE + boundary + intra + alignment losses on forgery masks",
    paper="ForensicsAdapter (Cui et al., CVPR 2025)",
)
