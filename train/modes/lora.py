"""``lora``: low-rank updates ``W + (alpha / rank) B A`` of chosen ViT matrices, plus the head (Hu et al., ICLR 2022).

Only ``A``, ``B`` and the head train. On save the update is folded into dense weights; ``A`` and ``B`` go to
``adapter_factors.safetensors`` as ``<matrix>.lora_A`` / ``<matrix>.lora_B`` (e.g.
``visual.transformer.resblocks.0.attn.q_proj.lora_A``). The change of every targeted matrix has rank <= ``rank``.
"""

from __future__ import annotations

import torch
from pydantic import Field

from train.modes.adaptation import train_only
from train.modes.lowrank import LoRAFactor, Targets, fold_installed, install
from train.modes.registry import Adaptation, ModeOptions, TrainingMode


class LoRAOptions(ModeOptions):
    rank: int = Field(8, gt=0, description="rank r of each update B A")
    alpha: float = Field(16.0, gt=0, description="the update is scaled by alpha / rank")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the input features of the low-rank branch")
    targets: Targets = Field(
        ("q_proj", "k_proj", "v_proj", "out_proj"),
        description="matrices of every block: attention q/k/v (rows of in_proj_weight), out_proj, mlp c_fc/c_proj",
    )


def install_lora(model, options: LoRAOptions, seed: int) -> Adaptation:
    train_only(model, lambda name: False)
    generator = torch.Generator().manual_seed(seed)
    counter = iter(range(1 << 20))

    def make(target, weight):
        return LoRAFactor(
            weight.shape[0], weight.shape[1], options.rank, options.alpha, options.dropout,
            seed=seed * 4099 + next(counter), generator=generator, device=weight.device, dtype=weight.dtype,
        )  # fmt: skip

    installed = install(model, options.targets, make)

    def advance(module, args) -> None:  # one dropout draw per training forward, replayed by checkpointing
        if module.training:
            for _, factor in installed:
                factor.step += 1

    hook = model.register_forward_pre_hook(advance)

    def fold(model) -> dict[str, torch.Tensor]:
        hook.remove()
        return fold_installed(model, installed)

    return Adaptation(fold=fold)


MODE = TrainingMode(
    name="lora", prefix="lora", options=LoRAOptions, install=install_lora,
    trains="rank-r updates (alpha/r) B A of the chosen q/k/v/out_proj/c_fc/c_proj matrices + head",
    paper="LoRA (Hu et al., ICLR 2022)",
)
