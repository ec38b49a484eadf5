"""Low-rank updates of the ViT's linear weights as ``torch.nn.utils.parametrize`` parametrisations.

open_clip's attention is ``nn.MultiheadAttention``: q, k and v are the three row blocks of one ``in_proj_weight``
parameter, not ``nn.Linear`` modules, so ``peft`` does not fit it cleanly. A parametrisation replaces a weight by a
function of it and leaves module structure, forward code and tensor names alone; folding evaluates the function once
and stores the result, so the dense detector computes exactly what the parametrised one did.

Targets (per residual block): ``q_proj``, ``k_proj``, ``v_proj`` (row blocks of ``attn.in_proj_weight``),
``out_proj`` (``attn.out_proj.weight``), ``c_fc`` and ``c_proj`` (``mlp.c_fc.weight``, ``mlp.c_proj.weight``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal, get_args

import torch
from pydantic import AfterValidator
from torch import nn
from torch.nn.utils import parametrize

from train.modes.adaptation import head_parameter_names, named_trainable, remove_all_parametrizations

Target = Literal["q_proj", "k_proj", "v_proj", "out_proj", "c_fc", "c_proj"]
TARGETS: tuple[str, ...] = get_args(Target)


def _each_once(value: tuple) -> tuple:
    if not value or len(set(value)) != len(value):
        raise ValueError(f"list each target once, at least one: {list(value)}")
    return value


Targets = Annotated[tuple[Target, ...], AfterValidator(_each_once)]  # the ``targets`` option of lora/svd_residual
_QKV = {"q_proj": 0, "k_proj": 1, "v_proj": 2}


@dataclass(frozen=True)
class TargetWeight:
    """One targeted matrix: ``module.<tensor>`` rows ``[row_start, row_stop)`` of block ``block``."""

    block: int
    target: str
    module: nn.Module
    tensor: str
    row_start: int
    row_stop: int

    @property
    def name(self) -> str:  # the prefix of its factors in adapter_factors.safetensors
        part = f"attn.{self.target}" if self.target in _QKV or self.target == "out_proj" else f"mlp.{self.target}"
        return f"visual.transformer.resblocks.{self.block}.{part}"


def target_weights(model: nn.Module, targets: tuple[str, ...]) -> list[TargetWeight]:
    """The matrices named by ``targets`` in every residual block of ``model.visual``, in block order."""
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown:
        raise ValueError(f"unknown target(s) {unknown}; choices: {list(TARGETS)}")
    found = []
    for i, block in enumerate(model.visual.transformer.resblocks):
        width = block.attn.embed_dim
        for target in TARGETS:  # a fixed order: factor names and init draws do not depend on the option's order
            if target not in targets:
                continue
            if target in _QKV:
                j = _QKV[target]
                found.append(TargetWeight(i, target, block.attn, "in_proj_weight", j * width, (j + 1) * width))
            elif target == "out_proj":
                rows = block.attn.out_proj.weight.shape[0]
                found.append(TargetWeight(i, target, block.attn.out_proj, "weight", 0, rows))
            else:
                layer = getattr(block.mlp, target)
                found.append(TargetWeight(i, target, layer, "weight", 0, layer.weight.shape[0]))
    return found


class LoRAFactor(nn.Module):
    """``W + (alpha / rank) B A`` with ``A`` (rank x in) Kaiming-uniform and ``B`` (out x rank) zero (Hu et al. 2022).

    Dropout acts on the input features of the low-rank branch, as in LoRA, but as a weight-space mask shared by
    the micro-batch (``B (A diag(m))``, ``m`` Bernoulli / (1 - p)), drawn from (seed, step): the parametrisation
    sees weights, not activations. ``step`` is a saved buffer advanced once per training forward, so gradient
    checkpointing recomputes the same mask and a resumed run draws the same masks as an uninterrupted one.
    """

    def __init__(self, rows: int, cols: int, rank: int, alpha: float, dropout: float, seed: int,
                 generator: torch.Generator, device, dtype):  # fmt: skip
        super().__init__()
        a = torch.empty(rank, cols, dtype=torch.float32)
        bound = 1 / math.sqrt(cols)  # kaiming_uniform_(a=sqrt(5)), nn.Linear's default
        a.uniform_(-bound, bound, generator=generator)
        self.lora_A = nn.Parameter(a.to(device=device, dtype=dtype))
        self.lora_B = nn.Parameter(torch.zeros(rows, rank, device=device, dtype=dtype))
        self.scale = alpha / rank
        self.dropout = dropout
        self.seed = seed
        self.register_buffer("step", torch.zeros((), dtype=torch.int64, device=device))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        a = self.lora_A
        if self.training and self.dropout > 0:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.step))
            keep = (torch.rand(a.shape[1], generator=gen) >= self.dropout).to(a.device, a.dtype)
            a = a * keep / (1 - self.dropout)
        return weight + self.scale * (self.lora_B @ a)

    def factors(self) -> dict[str, torch.Tensor]:
        return {"lora_A": self.lora_A, "lora_B": self.lora_B}


class SVDResidualFactor(nn.Module):
    """Effort (Yan et al., ICML 2025): ``W = U S Vᵀ``; the top ``r - k`` components stay frozen (``main``), the
    bottom ``k`` become a trainable residual ``U_k diag(S_k) V_kᵀ`` initialised from them.

    ``frozen_vectors`` keeps the frozen ``U_r`` and ``Vh_r`` (non-persistent buffers: recomputed from the
    pretrained weight on every install) for :meth:`orthogonality_loss`, which needs them.
    """

    def __init__(self, weight: torch.Tensor, rank: int, *, frozen_vectors: bool = False):
        super().__init__()
        r = min(weight.shape)
        if not 0 < rank < r:
            raise ValueError(f"svd_residual rank {rank} must lie in [1, {r - 1}] for a {tuple(weight.shape)} matrix")
        w = weight.detach().float()
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        keep = r - rank
        main = (u[:, :keep] * s[:keep]) @ vh[:keep]
        self.register_buffer("main", main.to(weight.dtype))
        self.register_buffer("frobenius2", (w * w).sum())  # ||W||_F^2 of the pretrained matrix
        self.U = nn.Parameter(u[:, keep:].contiguous().to(weight.dtype))
        self.S = nn.Parameter(s[keep:].contiguous().to(weight.dtype))
        self.V = nn.Parameter(vh[keep:].t().contiguous().to(weight.dtype))
        self.frozen_vectors = frozen_vectors
        if frozen_vectors:
            u_r, vh_r = u[:, :keep].contiguous(), vh[:keep].contiguous()
            eye = torch.eye(keep, device=w.device, dtype=torch.float64)
            self.register_buffer("U_r", u_r, persistent=False)
            self.register_buffer("Vh_r", vh_r, persistent=False)
            # the frozen blocks of Effort's Gram matrices: constant, so computed once (in float64)
            frozen = (
                ((u_r.double().t() @ u_r.double() - eye) ** 2).sum(),
                ((vh_r.double() @ vh_r.double().t() - eye) ** 2).sum(),
            )
            self.register_buffer("frozen_gram_error2", torch.stack(frozen).float(), persistent=False)

    def residual(self) -> torch.Tensor:
        return (self.U * self.S) @ self.V.t()

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return self.main + self.residual()

    def orthogonality_loss(self) -> torch.Tensor:
        """Effort's ``0.5 ||[U_r U_k][U_r U_k]ᵀ - I||_F + 0.5 ||[Vh_r; Vh_k][Vh_r; Vh_k]ᵀ - I||_F`` (norms not
        squared) over the frozen and the trained singular vectors: it keeps the residual orthonormal *and* out of
        the frozen subspace.

        Evaluated blockwise, without the m x m product: for ``C = [U_r U_k]`` (m x r),
        ``||C Cᵀ - I_m||² = ||U_rᵀU_r - I||² + 2 ||U_rᵀU_k||² + ||U_kᵀU_k - I||² + (m - r)``; the last term is 0 for
        the square attention matrices Effort targets (a tall ``c_fc`` keeps that constant floor, as Effort's formula
        gives it). The V side is the r x r Gram of the rows, with no floor.
        """
        if not self.frozen_vectors:
            raise RuntimeError("orthogonality_loss needs the frozen vectors: build with frozen_vectors=True")
        u, v = self.U.float(), self.V.float()
        eye = torch.eye(u.shape[1], device=u.device, dtype=torch.float32)
        u_side = (self.frozen_gram_error2[0] + 2 * ((self.U_r.t() @ u) ** 2).sum() + ((u.t() @ u - eye) ** 2).sum()
                  + (u.shape[0] - self.U_r.shape[1] - u.shape[1]))  # fmt: skip
        v_side = self.frozen_gram_error2[1] + 2 * ((self.Vh_r @ v) ** 2).sum() + ((v.t() @ v - eye) ** 2).sum()
        return 0.5 * _norm_from_square(u_side) + 0.5 * _norm_from_square(v_side)

    def singular_value_loss(self) -> torch.Tensor:
        """Effort's ``| ||Ŵ||_F² - ||W||_F² |``: the adapted matrix keeps the pretrained energy (sum of squared
        sigmas)."""
        w = self.forward(self.main).float()
        return ((w * w).sum() - self.frobenius2).abs()

    def factors(self) -> dict[str, torch.Tensor]:
        return {"U": self.U, "S": self.S, "V": self.V}


def _norm_from_square(square: torch.Tensor) -> torch.Tensor:
    """``sqrt`` of a squared norm; at exactly 0 (no gradient direction) the gradient is 0, not NaN."""
    return torch.sqrt(square.clamp_min(1e-30))


class RowBlockUpdate(nn.Module):
    """Parametrisation of one tensor whose row blocks carry their own factor (q/k/v of ``in_proj_weight``)."""

    def __init__(self, rows: int, blocks: list[tuple[int, int, nn.Module]]):
        super().__init__()
        self.rows = rows
        self.bounds = [(start, stop) for start, stop, _ in blocks]
        self.updates = nn.ModuleList([factor for _, _, factor in blocks])

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.bounds == [(0, self.rows)]:
            return self.updates[0](weight)
        parts, cursor = [], 0
        for (start, stop), factor in zip(self.bounds, self.updates):
            if start > cursor:
                parts.append(weight[cursor:start])
            parts.append(factor(weight[start:stop]))
            cursor = stop
        if cursor < self.rows:
            parts.append(weight[cursor:])
        return torch.cat(parts, dim=0)


def install(model: nn.Module, targets: tuple[str, ...], make: Callable[[TargetWeight, torch.Tensor], nn.Module]):
    """Parametrise every targeted weight with ``make(target, block_weight)``; returns [(target, factor)]."""
    chosen = target_weights(model, targets)
    by_tensor: dict[tuple[int, str], list[TargetWeight]] = {}
    for t in chosen:
        by_tensor.setdefault((id(t.module), t.tensor), []).append(t)
    installed = []
    for group in by_tensor.values():
        module, tensor = group[0].module, group[0].tensor
        weight = getattr(module, tensor)
        factors = [(t, make(t, weight[t.row_start : t.row_stop])) for t in group]
        installed += factors
        update = RowBlockUpdate(weight.shape[0], [(t.row_start, t.row_stop, f) for t, f in factors])
        parametrize.register_parametrization(module, tensor, update)
        getattr(module.parametrizations, tensor).original.requires_grad_(False)
    return installed


def fold_installed(model: nn.Module, installed: list) -> dict[str, torch.Tensor]:
    """Fold every parametrisation into dense weights (in eval mode: no dropout mask in them); returns the factors
    (``<matrix>.<factor>``, e.g. ``visual.transformer.resblocks.0.attn.q_proj.lora_A``) and the head tensors."""
    model.eval()
    factors = {f"{t.name}.{k}": v.detach().cpu().clone() for t, f in installed for k, v in f.factors().items()}
    factors.update(named_trainable(model, head_parameter_names(model)))
    remove_all_parametrizations(model)
    return factors
