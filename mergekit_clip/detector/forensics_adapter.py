"""ForensicsAdapter detector (Cui et al., "Forensics Adapter: Adapting CLIP for Generalizable Face Forgery
Detection", CVPR 2025), re-implemented from the paper and the behaviour of its public code (OUC-VAS/ForensicsAdapter,
CC BY-NC; no code copied).

A frozen open_clip CLIP tower, and beside it (everything here is trained, ``visual.*`` never is):

* **adapter** (``adapter.*``): a ViT-tiny (timm blocks, width 192, blocks 1-8, no class token, no final norm)
  over the frame in 16-px patches, preceded by ``num_queries`` learnable query tokens with their own positional
  embedding. The patch positional embedding is stored on a 14x14 grid (timm's ``vit_tiny_patch16_224``) and
  resized to the patch grid; positions are added again after every block, as the original does.
* **CLIP -> adapter** (``adapter.fusions.<block>``): after adapter block ``b`` of ``fusion_map``, the patch tokens
  of CLIP layer ``fusion_map[b]`` go through a channel LayerNorm + 1x1 conv, are resized to the adapter grid and
  added with weight ``fusion_weight``. Difference from the original: there these projections are created inside
  ``forward`` (new random weights at every call, never trained or saved); here they are registered modules,
  trained and saved, so a detector computes the same function every time and can be merged.
* **mask decoder** (``adapter.mask_decoder``): MLPs on the query tokens and 1x1-conv MLPs on the adapter's patch map
  give per query a boundary map (query . patch features) and per CLIP head an attention bias.
* **adapter -> CLIP** (``rec_attn_clip``): the frozen CLIP blocks after ``rerun_from_layer`` run again on
  ``[num_queries copies of CLS, CLS, patch tokens]``. Query tokens see themselves (each only its own), not the CLS,
  and the patch tokens through the predicted biases; CLS and patches never see the queries (-100 in the mask), so
  they follow CLIP, except that after block ``refine_layer`` ``refine_weight`` x a refined copy of the patch tokens
  (1x1 conv down to ``refine_dim``, ReLU, 1x1 conv up) is added.
* **head**: the query outputs -> ``ln_post`` -> ``proj`` -> L2 norm -> Conv1d stack over the queries
  (``clip_post_process.first_process``) -> MLP -> 2 logits (real, fake).
* **boundary map** (``masked_xray_post_process``): the last decoder's per-query maps, gated per patch (training:
  the ground-truth boundary patches, as the original; inference: no gate), reduced by convs + BatchNorm and
  upsampled by a transposed conv to the frame size.

Module names mirror the original's (``adapter.vit_model.blocks.N``, ``adapter.mask_decoder.query_mlp.layers.K``,
``rec_attn_clip.clip_intra_blocks.0.conv_first``, ``clip_post_process.first_process.K`` ...) so that an importer's
rename table stays short. BatchNorm layers keep no ``num_batches_tracked`` counter (an integer tensor no merge
method can average; momentum is fixed, so it is never read).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from mergekit_clip.detector.spec import DetectorSpec, ForensicsAdapterSpec

# Top-level modules of everything a ForensicsAdapter detector trains (``visual.*`` is the frozen CLIP tower).
TRAINED_MODULES = ("adapter", "rec_attn_clip", "masked_xray_post_process", "clip_post_process")
QUERY_MASK = -100.0  # additive attention mask that hides a token (the original's value, not -inf: no NaN rows)
_ADAPTER_LN_EPS = 1e-6  # timm ViT and the original's channel LayerNorm


class ForensicsAdapterOutput(NamedTuple):
    """Everything one forward gives (a tuple, so DistributedDataParallel passes it through); the training losses
    read the intermediate tokens.

    ``logits`` (B, 2); ``boundary`` (B, 1, S, S) at the frame size S; ``adapter_tokens[i]`` the adapter patch tokens
    after block i+1 (and its fusion), (B, L_a, width); ``clip_refine_tokens`` the refinement's hidden features
    (B, L_clip, refine_dim); ``query_features`` the L2-normalised projected query outputs (B, Q, embed_dim).
    """

    logits: torch.Tensor
    boundary: torch.Tensor
    adapter_tokens: tuple[torch.Tensor, ...]
    clip_refine_tokens: torch.Tensor
    query_features: torch.Tensor


class _BatchNormNoCount:
    """Mixin: drop BatchNorm's integer ``num_batches_tracked`` buffer (unused with a fixed momentum)."""

    def _drop_counter(self) -> None:
        self.register_buffer("num_batches_tracked", None)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs):
        # Without metadata (a plain dict) BatchNorm assumes an old checkpoint and inserts the counter.
        local_metadata = {**local_metadata, "version": max(2, local_metadata.get("version") or 2)}
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)


class BatchNorm1d(_BatchNormNoCount, nn.BatchNorm1d):
    def __init__(self, num_features: int):
        super().__init__(num_features)
        self._drop_counter()


class BatchNorm2d(_BatchNormNoCount, nn.BatchNorm2d):
    def __init__(self, num_features: int):
        super().__init__(num_features)
        self._drop_counter()


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of an NCHW map (ConvNeXt style)."""

    def __init__(self, channels: int, eps: float = _ADAPTER_LN_EPS):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class MLP(nn.Module):
    """``layers`` affine maps with ReLU between them (Linear on tokens, or 1x1 convs on maps)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, layers: int, conv: bool = False):
        super().__init__()
        affine = partial(nn.Conv2d, kernel_size=1) if conv else nn.Linear
        dims = [in_dim] + [hidden] * (layers - 1) + [out_dim]
        self.layers = nn.ModuleList(affine(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class Fusion(nn.Module):
    """CLIP patch tokens -> the adapter's width and grid (channel LayerNorm + 1x1 conv, bilinear resize)."""

    def __init__(self, clip_width: int, width: int):
        super().__init__()
        self.proj = nn.Sequential(ChannelLayerNorm(clip_width), nn.Conv2d(clip_width, width, kernel_size=1))

    def forward(self, clip_tokens: torch.Tensor, grid: int) -> torch.Tensor:
        n, length, d = clip_tokens.shape
        side = int(round(length**0.5))
        x = clip_tokens.transpose(1, 2).reshape(n, d, side, side)
        if side != grid:
            x = F.interpolate(x, size=(grid, grid), mode="bilinear", align_corners=False)
        x = self.proj(x)
        return x.flatten(2).transpose(1, 2)


class MaskDecoder(nn.Module):
    """Query tokens x adapter patch map -> per-query boundary maps and per-head attention biases."""

    def __init__(self, width: int, mlp_dim: int, out_dim: int, layers: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query_mlp = MLP(width, mlp_dim, out_dim, layers)
        self.xray_mlp = MLP(width, mlp_dim, out_dim, layers, conv=True)
        self.attn_mlp = MLP(width, mlp_dim, out_dim * heads, layers, conv=True)
        self.bias_scaling = nn.Linear(1, 1)

    def forward(self, query: torch.Tensor, patch_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``query`` (B, Q, D), ``patch_map`` (B, D, h, w) -> boundary (B, Q, h, w), bias (B, heads, Q, h, w)."""
        q = self.query_mlp(query)
        xray = self.xray_mlp(patch_map)
        attn = self.attn_mlp(patch_map)
        n, d, h, w = xray.shape
        boundary = torch.einsum("bqd,bdhw->bqhw", q, xray)
        bias = torch.einsum("bqd,bkdhw->bkqhw", q, attn.reshape(n, self.heads, d, h, w))
        bias = bias * self.bias_scaling.weight[0, 0] + self.bias_scaling.bias[0]
        return boundary, bias


class AdapterViT(nn.Module):
    """The kept part of timm's ViT: the patch positional embedding and the first ``depth`` blocks."""

    def __init__(self, fa: ForensicsAdapterSpec):
        super().__init__()
        from timm.models.vision_transformer import Block

        self.pos_embed = nn.Parameter(torch.randn(1, fa.pos_grid**2, fa.width) * 0.02)
        norm = partial(nn.LayerNorm, eps=_ADAPTER_LN_EPS)
        self.blocks = nn.ModuleList(
            Block(fa.width, fa.heads, mlp_ratio=fa.mlp_ratio, qkv_bias=True, norm_layer=norm) for _ in range(fa.depth)
        )


class Adapter(nn.Module):
    """Adapter network: patch embedding, query tokens, ViT-tiny blocks with CLIP fusion, mask decoder."""

    def __init__(self, fa: ForensicsAdapterSpec, clip_width: int, clip_heads: int):
        super().__init__()
        self.fa = fa
        self.vit_model = AdapterViT(fa)
        self.query_embed = nn.Parameter(torch.randn(1, fa.num_queries, fa.width) * 0.02)
        self.query_pos_embed = nn.Parameter(torch.randn(1, fa.num_queries, fa.width) * 0.02)
        self.fusions = nn.ModuleDict({str(b): Fusion(clip_width, fa.width) for b in sorted(fa.fusion_map)})
        self.mask_decoder = MaskDecoder(fa.width, fa.mlp_dim, fa.mlp_out_dim, fa.mlp_layers, clip_heads)
        self.ln_pre = nn.LayerNorm(fa.width)
        self.patch_conv = nn.Conv2d(3, fa.width, kernel_size=fa.patch_size, stride=fa.patch_size)

    def positions(self, batch: int) -> torch.Tensor:
        """(batch, Q + grid^2, width): query positions, then the patch grid's (resized from ``pos_grid``).

        Expanded before the concatenation, so each parameter's gradient is a fresh sum, not a slice of the
        concatenated gradient (DDP warns about the strides of such a slice)."""
        fa = self.fa
        pos = self.vit_model.pos_embed
        if fa.pos_grid != fa.grid:
            side = fa.pos_grid
            pos = pos.transpose(1, 2).reshape(1, fa.width, side, side)
            pos = F.interpolate(pos, size=(fa.grid, fa.grid), mode="bilinear", align_corners=False)
            pos = pos.flatten(2).transpose(1, 2)
        return torch.cat([self.query_pos_embed.expand(batch, -1, -1), pos.expand(batch, -1, -1)], dim=1)

    def forward(
        self, images: torch.Tensor, clip_patches: dict[int, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """-> (boundary (B, Q, h, w), attention bias (B, heads, Q, h, w), patch tokens after each block)."""
        fa = self.fa
        x = self.patch_conv(images).flatten(2).transpose(1, 2)
        n, length = x.shape[0], x.shape[1]
        pos = self.positions(n)
        x = torch.cat([self.query_embed.expand(n, -1, -1), x], dim=1) + pos
        x = self.ln_pre(x)
        patch_tokens = []
        for index, block in enumerate(self.vit_model.blocks, start=1):
            x = block(x)
            if index in fa.fusion_map:
                fused = self.fusions[str(index)](clip_patches[fa.fusion_map[index]], fa.grid)
                x = torch.cat([x[:, :-length], x[:, -length:] + fa.fusion_weight * fused], dim=1)
            patch_tokens.append(x[:, -length:])
            if index < len(self.vit_model.blocks):
                x = x + pos  # the original re-adds positions after every block
        query = x[:, :-length]
        patch_map = x[:, -length:].transpose(1, 2).reshape(n, fa.width, fa.grid, fa.grid)
        boundary, bias = self.mask_decoder(query, patch_map)
        return boundary, bias, patch_tokens


class ClipIntraBlock(nn.Module):
    """Refinement of CLIP's patch tokens inside the re-run: conv down, ReLU (hidden features), conv up."""

    def __init__(self, clip_width: int, hidden: int):
        super().__init__()
        self.conv_first = nn.Conv1d(clip_width, hidden, kernel_size=1)
        self.conv_second = nn.Conv1d(hidden, clip_width, kernel_size=1)

    def forward(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, W) -> (refined (B, L, W), hidden (B, L, hidden))."""
        hidden = F.relu(self.conv_first(patches.transpose(1, 2)))
        return self.conv_second(hidden).transpose(1, 2), hidden.transpose(1, 2)


class RecAttnClip(nn.Module):
    """The trainable part of the adapter -> CLIP interaction (the CLIP blocks it re-runs stay in ``visual``)."""

    def __init__(self, clip_width: int, hidden: int):
        super().__init__()
        self.clip_intra_blocks = nn.ModuleList([ClipIntraBlock(clip_width, hidden)])


class MaskPostXrayProcess(nn.Module):
    """Per-query boundary maps (B, Q, h, w) -> one boundary map at the frame size (B, 1, h*p, w*p)."""

    def __init__(self, num_queries: int, patch_size: int):
        super().__init__()
        q = num_queries
        self.process = nn.Sequential(
            nn.Conv2d(q, q // 2, kernel_size=3, padding=1),
            BatchNorm2d(q // 2),
            nn.ReLU(),
            nn.Conv2d(q // 2, q // 4, kernel_size=3, padding=1),
            BatchNorm2d(q // 4),
            nn.ReLU(),
            nn.Conv2d(q // 4, 1, kernel_size=1),
            nn.ConvTranspose2d(1, 1, kernel_size=patch_size, stride=patch_size),
        )

    def forward(self, maps: torch.Tensor, gate: torch.Tensor | None = None) -> torch.Tensor:
        if gate is not None:  # (B, h*w) 1 on patches that hold a boundary
            maps = maps * gate.reshape(gate.shape[0], 1, *maps.shape[2:]).to(maps.dtype)
        return self.process(maps)


class PostClipProcess(nn.Module):
    """(B, Q, E) normalised query features -> (B, 2) logits: Conv1d over queries, then an MLP."""

    def __init__(self, num_queries: int, embed_dim: int):
        super().__init__()
        q, e = num_queries, embed_dim
        self.first_process = nn.Sequential(
            nn.Conv1d(q, q // 2, kernel_size=3, padding=1),
            BatchNorm1d(q // 2),
            nn.ReLU(),
            nn.Conv1d(q // 2, q // 4, kernel_size=3, padding=1),
            BatchNorm1d(q // 4),
            nn.ReLU(),
            nn.Conv1d(q // 4, 1, kernel_size=3, padding=1),
        )
        self.second_process = nn.Sequential(
            nn.Linear(e, e // 2), nn.ReLU(), nn.Linear(e // 2, e // 4), nn.ReLU(), nn.Linear(e // 4, 2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second_process(self.first_process(x).squeeze(1))


def query_attention_mask(bias: torch.Tensor, num_queries: int, length: int) -> torch.Tensor:
    """Additive mask (B*heads, T, T), T = Q + 1 + L, for the re-run on [queries, CLS, patches].

    ``bias`` (B, heads, Q, L). Each query sees itself and the patches (through ``bias``), no other query and not
    the CLS; CLS and patches see each other and no query.
    """
    n, heads = bias.shape[:2]
    q, total = num_queries, num_queries + 1 + length
    mask = bias.new_zeros(total, total)
    mask[:, :q] = QUERY_MASK
    mask[torch.arange(q), torch.arange(q)] = 0.0
    mask[:q, q] = QUERY_MASK
    mask = mask.expand(n * heads, total, total).clone()
    mask[:, :q, q + 1 :] = bias.reshape(n * heads, q, length)
    return mask


class ForensicsAdapterDetector(nn.Module):
    """``forward(frames) -> logits`` (B, 2); frames at ``forensics_adapter.image_size``, CLIP-normalised."""

    def __init__(self, spec: DetectorSpec):
        super().__init__()
        from mergekit_clip.detector.model import build_visual_tower

        if spec.forensics_adapter is None:
            raise ValueError("spec has no forensics_adapter section")
        self.spec = spec
        fa, b = spec.forensics_adapter, spec.backbone
        self.visual = build_visual_tower(spec)
        self.visual.requires_grad_(False)
        self.adapter = Adapter(fa, b.width, b.heads)
        self.rec_attn_clip = RecAttnClip(b.width, fa.refine_dim)
        self.masked_xray_post_process = MaskPostXrayProcess(fa.num_queries, fa.patch_size)
        self.clip_post_process = PostClipProcess(fa.num_queries, b.embed_dim)

    fake_index = 1  # logits are (real, fake): the head spec is fixed (FORENSICS_ADAPTER_HEAD)

    def trainable_modules(self) -> dict[str, nn.Module]:
        """Everything but the frozen CLIP tower, by top-level name."""
        return {name: module for name, module in self.named_children() if name != "visual"}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.visual.set_grad_checkpointing(enable)

    def clip_features(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Frozen CLIP pass on the resized frames: (tokens at ``rerun_from_layer`` (B, 1+L, W), patch tokens of
        the layers ``fusion_map`` reads). Only the blocks these need run; no gradient (CLIP is frozen)."""
        fa, b = self.spec.forensics_adapter, self.spec.backbone
        if images.shape[-1] != b.image_size or images.shape[-2] != b.image_size:
            images = F.interpolate(images, size=(b.image_size, b.image_size), mode="bilinear", align_corners=False)
        wanted = set(fa.fusion_map.values())
        last = max(wanted | {fa.rerun_from_layer})
        with torch.no_grad():
            x = self.visual._embeds(images)
            layers = {0: x}
            for index, block in enumerate(self.visual.transformer.resblocks[:last], start=1):
                x = block(x)
                if index in wanted or index == fa.rerun_from_layer:
                    layers[index] = x
        return layers[fa.rerun_from_layer], {k: layers[k][:, 1:] for k in wanted}

    def forward_outputs(
        self, images: torch.Tensor, boundary_gate: torch.Tensor | None = None
    ) -> ForensicsAdapterOutput:
        """The full forward. ``boundary_gate`` (B, grid^2): training's ground-truth boundary patches (None: all)."""
        fa = self.spec.forensics_adapter
        start, clip_patches = self.clip_features(images)
        boundary_maps, bias, adapter_tokens = self.adapter(images, clip_patches)

        length = start.shape[1] - 1
        side = int(round(length**0.5))
        if side != fa.grid:  # CLIP's patch grid differs from the adapter's: resize the biases to it
            n, heads, q = bias.shape[:3]
            bias = F.interpolate(bias.reshape(n * heads, q, fa.grid, fa.grid), size=(side, side), mode="bilinear")
            bias = bias.reshape(n, heads, q, side, side)
        mask = query_attention_mask(bias.flatten(3), fa.num_queries, length)

        cls = start[:, :1]
        x = torch.cat([cls.expand(-1, fa.num_queries, -1), cls, start[:, 1:]], dim=1)
        refine_hidden = None
        blocks = self.visual.transformer.resblocks
        for index in range(fa.rerun_from_layer + 1, len(blocks) + 1):
            x = blocks[index - 1](x, attn_mask=mask.to(x.dtype))
            if index == fa.refine_layer:
                refined, refine_hidden = self.rec_attn_clip.clip_intra_blocks[0](x[:, -length:])
                x = torch.cat([x[:, :-length], x[:, -length:] + fa.refine_weight * refined], dim=1)
        queries = self.visual.ln_post(x[:, : fa.num_queries])
        queries = F.normalize(queries @ self.visual.proj, dim=-1)
        logits = self.clip_post_process(queries)
        boundary = self.masked_xray_post_process(boundary_maps, boundary_gate)
        return ForensicsAdapterOutput(logits, boundary, tuple(adapter_tokens), refine_hidden, queries)

    def forward(
        self, images: torch.Tensor, boundary_gate: torch.Tensor | None = None, outputs: bool = False
    ) -> torch.Tensor | ForensicsAdapterOutput:
        """Logits (B, 2); with ``outputs=True`` the whole :class:`ForensicsAdapterOutput` (training calls it so
        through DistributedDataParallel, whose gradient hooks only see ``forward``)."""
        out = self.forward_outputs(images, boundary_gate)
        return out if outputs else out.logits

    @torch.no_grad()
    def boundary_map(self, images: torch.Tensor, boundary_gate: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted blending-boundary map (B, S, S) at the frame size.

        ``boundary_gate`` (B, grid^2): the ground-truth boundary patches, as the original applies them at test time
        too. A detector trained with the gate (``gate_boundary``, the paper's default) learned the map only inside
        those patches, so its ungated map is not meaningful elsewhere; one trained without it predicts on its own.
        """
        return self.forward_outputs(images, boundary_gate).boundary[:, 0]

    def fake_probability_from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.float(), dim=-1)[:, self.fake_index]

    @torch.no_grad()
    def fake_probability(self, images: torch.Tensor) -> torch.Tensor:
        return self.fake_probability_from_logits(self(images))


def forensics_adapter_tensor_names(spec: DetectorSpec) -> list[str]:
    """The trained tensors of a ForensicsAdapter detector (not ``visual.*``), in model order, read from the model
    built on the meta device: the one list the mergekit architecture and the exporters use."""
    with torch.device("meta"):
        model = ForensicsAdapterDetector(spec)
    return [name for name in model.state_dict() if not name.startswith("visual.")]
