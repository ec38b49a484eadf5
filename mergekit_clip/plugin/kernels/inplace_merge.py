"""``GeneralizedTaskArithmeticMerge.merge_group`` (TIES, DARE, breadcrumbs, DELLA, task arithmetic) without
the per-ingredient temporaries, bit-identical to mergekit 0.1.5's.

Stock stacks the N task vectors (``deltas``, N tensors) and then, for sign consensus, materialises three more
N-tensor stacks at once: ``delta.sign()`` as floats, the boolean mask, and ``deltas * mask`` (then
``weights * mask``). Peak memory per output tensor is therefore ~3 N copies of it, which is what made a merge's
memory grow with the number of ingredients.

Here the stacked ``deltas`` is the only N-sized buffer. Each reduction is still ``stack.sum(dim=0)`` over the
same layout as stock (so the floating-point summation order, and every bit of the result, is unchanged), but
the stack is rewritten in place between reductions:

1. ``sign_weight = deltas.sum(0)`` (consensus ``sum``) or the sign counts (``count``; small integers, exact
   in any order), then ``majority`` exactly as ``mergekit.merge_methods.generalized_task_arithmetic.get_mask``;
2. row by row, ``deltas[i] *= (sign(deltas[i]) == majority)``; ``mixed = deltas.sum(0)``;
3. row by row, ``deltas[i] = weights[i] * mask_i``, the mask recomputed from the masked row (a kept entry keeps
   its sign, a dropped one became ``±0`` whose sign, 0, never equals the ±1 majority); ``divisor = deltas.sum(0)``.

:func:`install` patches the class for mergekit 0.1.5 only (the version whose code this mirrors); with another
version it leaves stock in place and says so.
"""

from __future__ import annotations

import logging
from importlib.metadata import version
from typing import Any

import torch

LOG = logging.getLogger("mergekit_clip")
MIRRORED_MERGEKIT = "0.1.5"
_STOCK: dict[str, Any] = {}


def _majority(deltas: torch.Tensor, method: str, mask_dtype: torch.dtype) -> torch.Tensor:
    """``get_mask``'s majority sign (in ``mask_dtype``), one row at a time where stock stacks ``sign``."""
    if method == "sum":
        return (deltas.sum(dim=0) >= 0).to(mask_dtype) * 2 - 1
    if method == "count":
        votes = torch.zeros(deltas.shape[1:], dtype=torch.int64, device=deltas.device)
        for row in deltas:
            votes += row.sign().to(mask_dtype).to(torch.int64)  # integers |votes| <= N: exact whatever the order
        # stock: sign.sum(dim=0) in mask_dtype's sum type; its sign is that of the exact count
        return (votes >= 0).to(mask_dtype) * 2 - 1
    raise RuntimeError(f'Unimplemented mask method "{method}"')


def _agrees(row: torch.Tensor, majority: torch.Tensor, mask_dtype: torch.dtype) -> torch.Tensor:
    return row.sign().to(mask_dtype) == majority


def merge_group(self, group, /, **parameters: Any) -> torch.Tensor:
    """Drop-in for ``GeneralizedTaskArithmeticMerge.merge_group`` (mergekit 0.1.5)."""
    from mergekit.sparsify import RescaleNorm, sparsify

    base = group.base.tensor
    entries = group.non_base
    if not entries:
        return base

    deltas = base.new_empty((len(entries), *base.shape))
    for index, entry in enumerate(entries):
        delta = entry.tensor - base
        if self.sparsification_method:
            delta = sparsify(
                delta,
                density=parameters["density"][entry.id],
                method=self.sparsification_method,
                rescale_norm=RescaleNorm.l1 if parameters["rescale"] else None,
                **{key: parameters[key][entry.id] for key in ("gamma", "epsilon") if key in parameters},
            )
        deltas[index] = delta
        del delta

    weights = torch.tensor(
        [parameters["weight"][entry.id] for entry in entries], dtype=deltas.dtype, device=deltas.device
    )
    while deltas.dim() > weights.dim():
        weights.unsqueeze_(-1)
    deltas.mul_(weights)

    if self.consensus_method:
        mask_dtype = torch.int8 if parameters["int8_mask"] else base.dtype
        majority = _majority(deltas, self.consensus_method, mask_dtype)
        for row in deltas:
            row.mul_(_agrees(row, majority, mask_dtype))
        mixed_delta = deltas.sum(dim=0)
        for row, weight in zip(deltas, weights):
            torch.mul(weight, _agrees(row, majority, mask_dtype), out=row)
        divisor = deltas.sum(dim=0)
        del deltas
        divisor[divisor == 0] = 1
    else:
        mixed_delta = deltas.sum(dim=0)
        divisor = weights.sum(dim=0)
        divisor[divisor.abs() < 1e-8] = 1

    if parameters["normalize"]:
        mixed_delta /= divisor
    if parameters["lambda"] != 1:
        mixed_delta *= parameters["lambda"]
    return (base + mixed_delta).to(base.dtype)


def install() -> bool:
    """Patch ``GeneralizedTaskArithmeticMerge.merge_group`` (idempotent); ``False`` if mergekit is not 0.1.5."""
    from mergekit.merge_methods.generalized_task_arithmetic import GeneralizedTaskArithmeticMerge as GTA

    if GTA.merge_group is merge_group:
        return True
    found = version("mergekit")
    if found != MIRRORED_MERGEKIT:
        LOG.info("mergekit-clip: in-place task-arithmetic merge mirrors mergekit %s, found %s: using stock",
                 MIRRORED_MERGEKIT, found)
        return False
    _STOCK["merge_group"] = GTA.merge_group
    merge_group.__wrapped__ = GTA.merge_group
    GTA.merge_group = merge_group
    return True


def uninstall() -> None:
    from mergekit.merge_methods.generalized_task_arithmetic import GeneralizedTaskArithmeticMerge as GTA

    if "merge_group" in _STOCK:
        GTA.merge_group = _STOCK["merge_group"]
