"""Forensic-head policy: how heads (and adapters) are made mergeable before any mergekit method sees them.

Policy (stated in every merge log and stored in the output's ``provenance.merge``):

1. **Label order.** Every 2-logit head is permuted to the canonical order (real = 0, fake = 1) using the
   label names in its config. Label sets other than {real, fake} are refused before the merge starts.
2. **1-logit heads** (sigmoid score ``z`` of their positive label) become the equivalent 2-logit head
   ``[-s*w/2, +s*w/2]`` (s = +1 when the positive label is ``fake``): softmax over it gives exactly
   ``sigmoid(s*z)``, and both rows stay centred, as cross-entropy training keeps 2-logit heads.
3. **Missing heads.** A model without a head tensor (a bare pretrained CLIP base, typically) is given the
   mean of the reconciled heads of the models that have one. For base-relative methods (task arithmetic,
   TIES, DARE, breadcrumbs, DELLA, Model Stock, SCE, RAM, NearSwap, ...) the head is then merged around
   the ingredients' consensus: task arithmetic with unit weights returns exactly that mean. Adapters
   follow the same rule.
4. Non-finite weights (NaN/Inf) in any input are an error naming the model and tensor.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import click
import torch

from mergekit_clip.detector.labels import canonical_permutation
from mergekit_clip.detector.layouts import HEAD_TENSORS, HF_CLASSIFIER_TENSORS
from mergekit_clip.detector.spec import CANONICAL_LABELS, HeadSpec

LOG = logging.getLogger("mergekit_clip.merge")

HEAD_POLICY = (
    "labels aligned to (real, fake); 1-logit heads -> equivalent centred 2-logit heads; "
    "a model without a head/adapter tensor gets the mean of the others' (reconciled) tensors"
)
HEAD_NAMES = HEAD_TENSORS + HF_CLASSIFIER_TENSORS


class MergeInputError(click.ClickException, ValueError):
    """An input model that cannot be merged; the message names the model and the tensor or field.

    A ``ClickException`` so that ``mergekit-yaml`` (a click command) prints one ``Error:`` line and exits 1.
    """


@dataclass
class ModelHeadInfo:
    name: str
    head: HeadSpec | None
    is_base: bool = False


@dataclass
class MergeContext:
    models: dict  # ModelReference -> ModelHeadInfo
    events: list[str] = field(default_factory=list)
    _logged: set = field(default_factory=set)

    def note(self, message: str) -> None:
        if message not in self._logged:
            self._logged.add(message)
            self.events.append(message)
            LOG.warning(message)


_ACTIVE: list[MergeContext] = []  # shared across mergekit's executor threads


def active_context() -> MergeContext | None:
    return _ACTIVE[-1] if _ACTIVE else None


@contextlib.contextmanager
def merge_context(ctx: MergeContext) -> Iterator[MergeContext]:
    _ACTIVE.append(ctx)
    try:
        yield ctx
    finally:
        _ACTIVE.remove(ctx)


def reconcile_head_tensor(tensor: torch.Tensor, head: HeadSpec) -> torch.Tensor:
    """Rows of a head weight/bias in canonical (real, fake) order, 2 logits."""
    if head.num_classes == 1:
        sign = 1.0 if head.positive_label == "fake" else -1.0
        half = tensor * (sign / 2)
        return torch.cat([-half, half], dim=0)
    if tuple(head.labels) != CANONICAL_LABELS:
        return tensor[canonical_permutation(head.labels)]
    return tensor


def prepare_inputs(weight_name: str, tensors: dict, ctx: MergeContext, expected: list) -> dict:
    """Apply the head policy to one gathered tensor group (``ModelReference -> tensor``).

    ``expected`` lists every model of the group; those absent from ``tensors`` lack this (optional) tensor.
    """
    for model, tensor in tensors.items():
        if not tensor.is_floating_point() or bool(torch.isfinite(tensor.sum())):
            continue  # a finite sum (one reduction, no bool tensor) proves every entry finite
        if not bool(torch.isfinite(tensor).all()):  # the sum may only have overflowed
            raise MergeInputError(f"{ctx.models[model].name}: tensor {weight_name} has NaN/Inf values")
    out = dict(tensors)
    if weight_name in HEAD_NAMES:
        for model, tensor in tensors.items():
            head = ctx.models[model].head
            if head is not None and (head.num_classes == 1 or tuple(head.labels) != CANONICAL_LABELS):
                out[model] = reconcile_head_tensor(tensor, head)
                ctx.note(
                    f"head policy: {ctx.models[model].name}: head {list(head.labels)} with {head.num_classes} "
                    "logit(s) reconciled to 2 logits (real, fake)"
                )
    missing = [m for m in expected if m not in out]
    if missing and out:
        # Optional tensors (heads, adapters, HF projections) that only some inputs carry.
        fill = torch.stack([t.to(torch.float32) for t in out.values()]).mean(dim=0)
        dtype = next(iter(out.values())).dtype
        what = "head" if weight_name in HEAD_NAMES else weight_name
        for model in missing:
            out[model] = fill.to(dtype)
            role = "base model" if ctx.models[model].is_base else "model"
            ctx.note(
                f"head policy: {role} {ctx.models[model].name} has no {what}: using the mean of the "
                f"{len(tensors)} other input(s)' {what} in its place"
            )
    return out


def install_gather_hook() -> None:
    """Route mergekit's ``GatherTensors`` results through :func:`prepare_inputs` during our merges."""
    from mergekit.io.tasks import GatherTensors

    if getattr(GatherTensors.execute, "_mergekit_clip", False):
        return
    original = GatherTensors.execute

    def execute(self, **kwargs):
        result = original(self, **kwargs)
        ctx = active_context()
        if ctx is None or not all(m in ctx.models for m in self.weight_info):
            return result
        name = next(iter(self.weight_info.values())).name
        return prepare_inputs(name, result, ctx, list(self.weight_info))

    execute._mergekit_clip = True
    execute.__wrapped__ = original
    GatherTensors.execute = execute


def install_identity_shortcut() -> None:
    """During our merges, a tensor that is identical in every input is written as it is.

    Every mergekit method maps identical inputs to that same tensor, but some fail on the way: multislerp
    with a base raises on all-zero task vectors, which is what frozen-backbone (linear-probe) ingredients
    produce for every backbone tensor. Skipping them is exact, and saves work on partially frozen families.
    """
    from mergekit.merge_methods.task_adapter import ExecuteMergeMethodTask

    if getattr(ExecuteMergeMethodTask.execute, "_mergekit_clip", False):
        return
    original = ExecuteMergeMethodTask.execute

    def execute(self, tensors, **kwargs):
        ctx = active_context()
        if ctx is not None and len(tensors) == len(self.model_order) and len(tensors) > 1:
            values = list(tensors.values())
            first = values[0]
            if all(v.dtype == first.dtype and torch.equal(v, first) for v in values[1:]):
                return first
        return original(self, tensors, **kwargs)

    execute._mergekit_clip = True
    execute.__wrapped__ = original
    ExecuteMergeMethodTask.execute = execute
