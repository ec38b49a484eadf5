"""Computing merge statistics of a detector on frames: Gram matrices of linear-layer inputs and diagonal Fisher.

Gram (RegMean): forward hooks on the open_clip visual tower collect the input ``X`` of every linear map and
accumulate ``X^T X`` over every token of every frame, divided by the token count at the end:

* ``attn.in_proj_weight``: the attention input (``ln_1`` output), from a pre-hook on ``nn.MultiheadAttention``;
* ``attn.out_proj.weight``: the attention context (heads concatenated) that ``out_proj`` multiplies. PyTorch's
  attention calls ``out_proj``'s weights functionally (module hooks never fire), so the pre-hook recomputes the
  context from the same input and ``in_proj`` weights (exact in eval mode: no dropout, no mask in a ViT);
* every ``nn.Linear`` (MLP ``c_fc``/``c_proj``, the head, adapter layers): a pre-hook on the module;
* ``visual.proj`` (only when the head reads projected features): the ``ln_post`` output of the class token.

Fisher (Fisher merging): per frame, the gradient of ``log p(y | x)`` with respect to every parameter, squared and
averaged over frames, where ``y`` is the model's own predicted label (``fisher_label="predicted"``, the empirical
choice of Matena & Raffel's code for classifiers) or the frame's true label (``"true"``). One backward pass per
frame, batch of one, so per-example gradients are exact.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

PROJ = "visual.proj"


def attention_context(attn: nn.MultiheadAttention, query: torch.Tensor, attn_mask=None) -> torch.Tensor:
    """The input of ``attn.out_proj`` for self-attention on ``query`` (batch-first ``(B, L, D)`` or ``(L, B, D)``)."""
    x = query if attn.batch_first else query.transpose(0, 1)
    batch, length, width = x.shape
    heads = attn.num_heads
    q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)

    def split(t):
        return t.reshape(batch, length, heads, width // heads).transpose(1, 2)

    if attn_mask is not None and attn_mask.dim() == 3 and attn_mask.shape[0] == batch * heads:
        attn_mask = attn_mask.reshape(batch, heads, length, length)  # per-head masks (ForensicsAdapter's re-run)

    context = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=attn_mask)
    context = context.transpose(1, 2).reshape(batch, length, width)
    return context if attn.batch_first else context.transpose(0, 1)


class GramCollector:
    """Forward hooks that accumulate ``X^T X`` per linear weight of a :class:`CLIPDetector` (see module doc)."""

    def __init__(self, model: nn.Module):
        self.sums: dict[str, torch.Tensor] = {}
        self.tokens: dict[str, int] = {}
        self._handles = []
        for name, module in model.named_modules():
            if isinstance(module, nn.MultiheadAttention):
                self._handles.append(module.register_forward_pre_hook(self._attention_hook(name), with_kwargs=True))
            elif isinstance(module, nn.Linear) and not name.endswith("attn.out_proj"):
                self._handles.append(module.register_forward_pre_hook(self._linear_hook(f"{name}.weight")))
        spec = getattr(model, "spec", None)
        if spec is not None and spec.head is not None and spec.head.feature == "projected":
            self._handles.append(model.visual.ln_post.register_forward_hook(self._output_hook(PROJ)))

    def add(self, name: str, inputs: torch.Tensor) -> None:
        rows = inputs.detach().reshape(-1, inputs.shape[-1]).to(torch.float32)
        gram = rows.T @ rows
        if name in self.sums:
            self.sums[name] += gram
        else:
            self.sums[name] = gram
        self.tokens[name] = self.tokens.get(name, 0) + rows.shape[0]

    def _attention_hook(self, prefix: str):
        def hook(module, args, kwargs):
            query = args[0] if args else kwargs["query"]
            self.add(f"{prefix}.in_proj_weight", query)
            self.add(f"{prefix}.out_proj.weight", attention_context(module, query, kwargs.get("attn_mask")))

        return hook

    def _linear_hook(self, name: str):
        def hook(module, args):
            self.add(name, args[0])

        return hook

    def _output_hook(self, name: str):
        def hook(module, args, output):
            if output.ndim == 2:  # the pooled class token (the patch_mean path never calls ln_post)
                self.add(name, output)

        return hook

    def grams(self) -> dict[str, torch.Tensor]:
        return {name: total / self.tokens[name] for name, total in self.sums.items()}

    def input_axes(self) -> dict[str, int]:
        return {name: 0 if name == PROJ else 1 for name in self.sums}

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


@torch.no_grad()
def collect_grams(model: nn.Module, batches: Iterable[torch.Tensor], device) -> tuple[dict, dict, int]:
    """``(grams, metadata {input_axis, tokens}, frames)`` of ``model`` over image batches."""
    collector = GramCollector(model)
    frames = 0
    try:
        for images in batches:
            model(images.to(device))
            frames += images.shape[0]
    finally:
        collector.close()
    return collector.grams(), {"input_axis": collector.input_axes(), "tokens": collector.tokens}, frames


def canonical_log_probs(model, logits: torch.Tensor) -> torch.Tensor:
    """``log p(real), log p(fake)`` (shape (B, 2)) from a 1- or 2-logit head, whatever its label order."""
    logits = logits.float()
    if logits.shape[-1] == 1:
        sign = 1.0 if model.spec.head.positive_label == "fake" else -1.0
        z = sign * logits[:, 0]
        return torch.stack([F.logsigmoid(-z), F.logsigmoid(z)], dim=-1)
    log_probs = F.log_softmax(logits, dim=-1)
    fake = model.fake_index
    return torch.stack([log_probs[:, 1 - fake], log_probs[:, fake]], dim=-1)


def collect_fisher(
    model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device, fisher_label: str = "predicted"
) -> tuple[dict[str, torch.Tensor], int]:
    """``(diagonal Fisher per parameter name, frames)``: mean over frames of squared per-frame gradients."""
    if fisher_label not in ("predicted", "true"):
        raise ValueError(f"fisher_label must be 'predicted' or 'true', got {fisher_label!r}")
    params = {name: p for name, p in model.named_parameters()}
    for p in params.values():
        p.requires_grad_(True)
    totals = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in params.items()}
    frames = 0
    for images, labels in batches:
        for image, label in zip(images.to(device), labels.tolist()):
            model.zero_grad(set_to_none=True)
            log_probs = canonical_log_probs(model, model(image[None]))[0]
            target = int(log_probs.argmax()) if fisher_label == "predicted" else int(label)
            log_probs[target].backward()
            for name, p in params.items():
                if p.grad is not None:
                    totals[name] += p.grad.detach().float() ** 2
            frames += 1
    model.zero_grad(set_to_none=True)
    return {name: total / max(frames, 1) for name, total in totals.items()}, frames
