"""The detector: an open_clip ViT visual tower, an optional adapter and a linear forensic head.

Parameter names are open_clip's (``visual.conv1.weight``, ``visual.transformer.resblocks.N.attn.in_proj_weight``,
``visual.ln_post.*``, ``visual.proj``) plus ``head.*`` and ``adapter.*``, so open_clip checkpoints load as they are
and mergekit sees one tensor per name. Labels are real = 0, fake = 1; the score is P(fake).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from mergekit_clip.detector.spec import DetectorSpec


class BottleneckAdapter(nn.Module):
    """Residual bottleneck on the head feature; ``up`` starts at zero so a new adapter is the identity."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.down = nn.Linear(dim, hidden)
        self.up = nn.Linear(hidden, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(F.gelu(self.down(x)))


def build_visual_tower(spec: DetectorSpec) -> nn.Module:
    from open_clip.transformer import LayerNorm, QuickGELU, VisionTransformer

    b = spec.backbone
    return VisionTransformer(
        image_size=b.image_size,
        patch_size=b.patch_size,
        width=b.width,
        layers=b.layers,
        heads=b.heads,
        mlp_ratio=b.mlp_ratio,
        output_dim=b.embed_dim,
        act_layer=QuickGELU if b.act == "quick_gelu" else nn.GELU,
        norm_layer=partial(LayerNorm, eps=b.layer_norm_eps),
    )


def build_detector(spec: DetectorSpec) -> nn.Module:
    """The model a spec describes: a :class:`CLIPDetector`, or a ForensicsAdapter detector."""
    if spec.forensics_adapter is not None:
        from mergekit_clip.detector.forensics_adapter import ForensicsAdapterDetector

        return ForensicsAdapterDetector(spec)
    return CLIPDetector(spec)


class CLIPDetector(nn.Module):
    """``forward(images) -> logits`` of shape (B, num_classes); :meth:`fake_probability` gives P(fake)."""

    def __init__(self, spec: DetectorSpec):
        super().__init__()
        if spec.forensics_adapter is not None:
            raise ValueError("a forensics_adapter spec builds a ForensicsAdapterDetector (use build_detector)")
        self.spec = spec
        self.visual = build_visual_tower(spec)
        head = spec.head
        self.adapter = (
            BottleneckAdapter(spec.feature_dim, spec.adapter.hidden) if spec.adapter is not None else None
        )
        self.head = nn.Linear(spec.feature_dim, head.num_classes) if head is not None else None
        if self.head is not None:
            nn.init.zeros_(self.head.bias)
            nn.init.normal_(self.head.weight, std=0.01)

    @property
    def fake_index(self) -> int:
        head = self.spec.head
        return head.labels.index("fake") if head.num_classes == 2 else 0

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.visual.set_grad_checkpointing(enable)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The head's input feature (before the adapter and normalisation)."""
        visual = self.visual
        x = visual._embeds(images)
        x = visual.transformer(x)
        feature = self.spec.head.feature if self.spec.head is not None else "pooled"
        if feature == "patch_mean":
            return x[:, 1:].mean(dim=1)
        pooled = visual.ln_post(x[:, 0])
        if feature == "projected":
            pooled = pooled @ visual.proj
        return pooled

    def head_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from precomputed :meth:`features` (used by linear probing on cached features)."""
        if self.head is None:
            raise ValueError("this model has no forensic head (a bare backbone is not a detector)")
        if self.adapter is not None:
            features = self.adapter(features)
        if self.spec.head.normalize:
            features = F.normalize(features, dim=-1)
        return self.head(features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head_logits(self.features(images))

    def fake_probability_from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if logits.shape[-1] == 1:
            positive_is_fake = self.spec.head.positive_label == "fake"
            return torch.sigmoid(logits[:, 0] if positive_is_fake else -logits[:, 0])
        return torch.softmax(logits, dim=-1)[:, self.fake_index]

    @torch.no_grad()
    def fake_probability(self, images: torch.Tensor) -> torch.Tensor:
        return self.fake_probability_from_logits(self(images))
