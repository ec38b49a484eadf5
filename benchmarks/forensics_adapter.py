"""ForensicsAdapter: trainable parameters at ViT-L/14 geometry, and training images/s against full fine-tuning.

Parameters: the detector built on the meta device at the paper's geometry (frozen OpenAI CLIP ViT-L/14, ViT-tiny
adapter with 8 blocks and 128 queries on 256-px frames, fusion 1->1, 2->8, 3->15), counted per part; the paper
reports about 5.7 M trainable. Our count includes the CLIP -> adapter fusion projections, which the original creates
afresh inside every forward (random, never trained or counted) and we train (docs/forensics_adapter.md).

Throughput: optimizer steps (forward, backward, AdamW) on one fixed random batch, in one process, for
``forensics_adapter`` (the mode's loss on frames with synthetic forgery masks) and for ``full_finetune`` of the same
tower (a linear head on the pooled CLS, every tower tensor trained), each after one warm-up step; the ratio is
measured in this run. Weights are random (no download). On a CPU the default tower is a small one with ViT-L/14's
token count (``small``: width 384, 12 layers, 6 heads, 14-px patches at 224 px); on a GPU pass ``--tower ViT-L-14``.

    python -m benchmarks.forensics_adapter                       # counts at ViT-L/14, timing on `small` (CPU)
    python -m benchmarks.forensics_adapter --quick               # tiny tower and adapter, seconds
    python -m benchmarks.forensics_adapter --tower ViT-L-14 --device cuda --batch 16
"""

from __future__ import annotations

import time

import click
import torch

from benchmarks._device import device_option
from mergekit_clip.detector.io import create_detector
from mergekit_clip.detector.spec import (
    BackboneSpec,
    DetectorSpec,
    ForensicsAdapterSpec,
    HeadSpec,
    PreprocessSpec,
    spec_from_open_clip,
    with_forensics_adapter,
)

PAPER_TRAINABLE = 5.7e6
TOWERS = {
    "tiny": BackboneSpec(image_size=32, patch_size=8, width=64, layers=4, heads=4, embed_dim=32),
    "small": BackboneSpec(
        image_size=224, patch_size=14, width=384, layers=12, heads=6, embed_dim=384, act="quick_gelu"
    ),
}
TINY_ADAPTER = ForensicsAdapterSpec(
    image_size=64, patch_size=16, width=32, depth=3, heads=2, pos_grid=3, num_queries=8, fusion_map={1: 1, 2: 3},
    mlp_dim=16, mlp_out_dim=8, bias_heads=4, refine_layer=3, refine_dim=16,
)  # fmt: skip
PARTS = {  # reporting groups, by tensor-name prefix
    "adapter ViT (patch embed, positions, queries, blocks, ln_pre)": (
        "adapter.patch_conv", "adapter.vit_model", "adapter.query", "adapter.ln_pre",
    ),
    "CLIP -> adapter fusion projections": ("adapter.fusions",),
    "mask decoder": ("adapter.mask_decoder",),
    "intra-block refinement": ("rec_attn_clip",),
    "boundary head": ("masked_xray_post_process",),
    "classification head": ("clip_post_process",),
}  # fmt: skip


def tower(name: str) -> BackboneSpec:
    return TOWERS[name] if name in TOWERS else spec_from_open_clip(name, quick_gelu=True).backbone


def scaled_adapter(backbone: BackboneSpec) -> ForensicsAdapterSpec:
    """The paper's adapter with its CLIP layers (fusion 1, 8, 15; refinement after 7 of 24) scaled to the tower."""

    def at(layer: int) -> int:
        return max(1, min(backbone.layers, round(layer * backbone.layers / 24)))

    return ForensicsAdapterSpec(
        bias_heads=backbone.heads, fusion_map={1: at(1), 2: at(8), 3: at(15)}, refine_layer=at(7)
    )


def fa_spec(backbone: BackboneSpec, adapter: ForensicsAdapterSpec) -> DetectorSpec:
    return with_forensics_adapter(DetectorSpec(backbone=backbone), adapter)


def parameter_counts(spec: DetectorSpec) -> dict[str, int]:
    """Trainable parameters per part (BatchNorm running statistics are buffers, not counted), plus the totals."""
    with torch.device("meta"):
        model = create_detector(spec, seed=None)
    named = {n: p.numel() for n, p in model.named_parameters()}
    counts = {part: sum(v for n, v in named.items() if n.startswith(prefixes)) for part, prefixes in PARTS.items()}
    counts["trainable"] = sum(v for n, v in named.items() if not n.startswith("visual."))
    counts["frozen CLIP tower"] = sum(v for n, v in named.items() if n.startswith("visual."))
    assert sum(counts[p] for p in PARTS) == counts["trainable"], "a trained tensor is in no reporting group"
    return counts


def _batch(spec: DetectorSpec, batch: int, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    size = spec.preprocess.image_size
    images = torch.randn(batch, 3, size, size, generator=g)
    labels = torch.arange(batch) % 2
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    blob = (((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size / 4) ** 2).float()
    masks = labels[:, None, None].float() * blob  # fakes carry a round forged region, reals none
    return images.to(device), labels.to(device), masks.to(device)


def _time_steps(step, steps: int, device: str) -> float:
    step()  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def images_per_s(mode: str, backbone: BackboneSpec, adapter: ForensicsAdapterSpec, batch: int, steps: int,
                 device: str) -> tuple[float, int]:  # fmt: skip
    """(training images/s, trainable parameters) of ``mode`` on this tower."""
    from train.modes import MODES

    torch.manual_seed(0)
    if mode == "forensics_adapter":
        spec = fa_spec(backbone, adapter)
    else:
        spec = DetectorSpec(
            backbone=backbone, head=HeadSpec(), preprocess=PreprocessSpec(image_size=backbone.image_size)
        )
    model = create_detector(spec, seed=0).to(device)
    if mode == "forensics_adapter":  # the paper's blocks 4-6, or the last three of a shallower adapter
        blocks = (4, 5, 6) if adapter.depth >= 6 else tuple(range(max(1, adapter.depth - 2), adapter.depth + 1))
        options = MODES[mode].options(adapter=adapter, intra_blocks=blocks)
    else:
        options = MODES[mode].options()
    adaptation = MODES[mode].adapt(model, options, 0)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    images, labels, masks = _batch(spec, batch, device)
    ok = torch.ones_like(labels, dtype=torch.bool)

    def step() -> None:
        if adaptation.batch_loss is not None:
            _, loss = adaptation.batch_loss(model, images, labels, ok, masks, torch.Generator().manual_seed(0))
        else:
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return batch * steps / _time_steps(step, steps, device), trainable


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--tower",
    "tower_name",
    default=None,
    help="timing tower: tiny, small or an open_clip name (default: small; tiny with --quick)",
)
@click.option("--quick", is_flag=True, help="tiny tower and adapter for the timing (a smoke run, seconds)")
@click.option("--batch", default=4, show_default=True, type=click.IntRange(2), help="images per optimizer step")
@click.option("--steps", default=3, show_default=True, type=click.IntRange(1), help="timed steps per mode")
@device_option()
@click.option("--threads", default=None, type=click.IntRange(1), help="torch CPU threads (None: torch's default)")
def main(tower_name: str | None, quick: bool, batch: int, steps: int, device: str, threads: int | None) -> None:
    """Trainable parameters of ForensicsAdapter at ViT-L/14 and its training images/s against full fine-tuning."""
    if threads is not None:
        torch.set_num_threads(threads)
    l14 = spec_from_open_clip("ViT-L-14", quick_gelu=True).backbone
    counts = parameter_counts(fa_spec(l14, ForensicsAdapterSpec()))
    print("ForensicsAdapter at ViT-L/14 geometry (paper's adapter: width 192, 8 blocks, 128 queries, 256-px frames)")
    for part in PARTS:
        print(f"  {part:<62} {counts[part]:>11,}")
    fusion = counts["CLIP -> adapter fusion projections"]
    print(f"  {'trainable (ours)':<62} {counts['trainable']:>11,}  ({counts['trainable'] / 1e6:.2f} M)")
    without = counts["trainable"] - fusion
    label = "trainable without the fusion projections (the original: none)"
    print(f"  {label:<62} {without:>11,}  ({without / 1e6:.2f} M; paper: {PAPER_TRAINABLE / 1e6:.1f} M)")
    print(f"  {'frozen CLIP tower':<62} {counts['frozen CLIP tower']:>11,}")

    name = tower_name or ("tiny" if quick else "small")
    backbone = tower(name)
    adapter = TINY_ADAPTER if name == "tiny" else scaled_adapter(backbone)
    print(f"\ntraining throughput on {device}, tower {name} (width {backbone.width}, {backbone.layers} layers, "
          f"{backbone.heads} heads, {backbone.patch_size}-px patches at {backbone.image_size} px), batch {batch}, "
          f"{steps} timed steps; adapter frames {adapter.image_size} px, {adapter.num_queries} queries")  # fmt: skip
    ft, ft_trainable = images_per_s("full_finetune", backbone, adapter, batch, steps, device)
    fa, fa_trainable = images_per_s("forensics_adapter", backbone, adapter, batch, steps, device)
    print(f"  {'mode':<18} {'images/s':>9} {'vs full FT':>11} {'trainable':>13}")
    print(f"  {'full_finetune':<18} {ft:>9.2f} {1.0:>10.2f}x {ft_trainable:>13,}")
    print(f"  {'forensics_adapter':<18} {fa:>9.2f} {fa / ft:>10.2f}x {fa_trainable:>13,}")


if __name__ == "__main__":
    main()
