"""Learned layer-wise merging: one coefficient per ingredient and per layer group, learned by gradient descent.

Layer groups: the patch embedding (``conv1``, class and position embeddings, ``ln_pre``), each transformer block,
and the head (``ln_post``, ``proj``, ``head.*``); anything else (adapters) is one more group. Two forms:

* ``linear``: ``theta_g = sum_i softmax(alpha_g)_i theta_i,g`` (the weights of a group sum to 1; model-soups'
  learned soup, by layer), emitted as a stock mergekit ``linear`` recipe with ``normalize: false``;
* ``task_arithmetic``: ``theta_g = base_g + sum_i lambda_i,g (theta_i,g - base_g)`` (layer-wise AdaMerging),
  emitted as ``task_arithmetic`` with ``lambda: 1`` and ``normalize: false``. A tensor the base lacks (a pretrained
  base has no head) is the mean of the ingredients', as the plugin's head policy gives mergekit.

Objectives: ``labelled`` = cross-entropy on labelled frames (the study's selection split); ``entropy`` = mean
prediction entropy on unlabelled target frames (AdaMerging; transductive: it reads the frames it is tested on,
never their labels, and the output says so). Each ingredient's ``weight`` in the recipe is a list of mergekit
conditional parameters, one ``filter`` per group (mergekit 0.1.5 matches a filter as a substring of the tensor
name, first match wins: blocks use ``visual.transformer.resblocks.N.`` with the trailing dot, every other tensor
its full name), so ``mergekit-yaml`` on the recipe reproduces the learned weights.

Reference: Wortsman et al., Model soups (ICML 2022), learned soup; Yang et al., AdaMerging (ICLR 2024).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

FORMS = ("linear", "task_arithmetic")
OBJECTIVES = ("labelled", "entropy")
_BLOCK = re.compile(r"^(visual\.transformer\.resblocks\.(\d+)\.)")
_PATCH = ("visual.conv1.", "visual.class_embedding", "visual.positional_embedding", "visual.ln_pre.")
_HEAD = ("visual.ln_post.", "visual.proj", "head.")


class LearnedMergeError(ValueError):
    """Inputs a learned merge cannot use (the message names the model or tensor)."""


def layer_group(name: str) -> str:
    block = _BLOCK.match(name)
    if block:
        return f"block{int(block.group(2))}"
    if name.startswith(_PATCH):
        return "patch_embed"
    if name == "visual.proj" or name.startswith(_HEAD):
        return "head"
    return "other"


def layer_groups(names: Sequence[str]) -> dict[str, list[str]]:
    """Group -> tensor names, in network order (patch embedding, blocks by index, head, other)."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(layer_group(name), []).append(name)

    def order(g: str) -> tuple[int, int]:
        if g == "patch_embed":
            return (0, 0)
        if g.startswith("block"):
            return (1, int(g[5:]))
        return (2, 0) if g == "head" else (3, 0)

    return {g: groups[g] for g in sorted(groups, key=order)}


def group_filters(group: str, names: Sequence[str]) -> list[str]:
    """mergekit filters (substrings of tensor names) that select exactly ``names``."""
    if group.startswith("block"):
        return [_BLOCK.match(names[0]).group(1)]
    return list(names)


@dataclass(frozen=True)
class LearnOptions:
    form: Literal["linear", "task_arithmetic"] = "linear"
    objective: Literal["labelled", "entropy"] = "labelled"
    steps: int = 50
    lr: float = 0.05
    batch_size: int = 32
    init: float = 0.3  # task_arithmetic: every lambda starts here (AdaMerging's 0.3); linear starts uniform
    seed: int = 0
    device: str = "cpu"


@dataclass
class LearnedMerge:
    options: LearnOptions
    ingredients: list[str]  # model dirs, recipe order
    base: str | None
    groups: dict[str, list[str]]
    weights: torch.Tensor  # (groups, ingredients): the recipe's per-layer weight
    state: dict[str, torch.Tensor]  # the merged tensors (float32, CPU)
    log: list[dict[str, float]] = field(default_factory=list)

    @property
    def transductive(self) -> bool:
        return self.options.objective == "entropy"

    def recipe(self) -> dict[str, Any]:
        """The stock mergekit recipe reproducing :attr:`state` (absolute paths)."""
        models = []
        for i, path in enumerate(self.ingredients):
            conditions = [{"filter": f, "value": float(self.weights[g, i])}
                          for g, (group, names) in enumerate(self.groups.items())
                          for f in group_filters(group, names)]  # fmt: skip
            models.append({"model": str(path), "parameters": {"weight": conditions}})
        recipe: dict[str, Any] = {"merge_method": self.options.form, "models": models}
        if self.options.form == "task_arithmetic":
            recipe["base_model"] = str(self.base)
            recipe["parameters"] = {"normalize": False, "lambda": 1.0}
        else:
            recipe["parameters"] = {"normalize": False}
        recipe["dtype"] = "float32"
        return recipe

    def table(self) -> dict[str, dict[str, float]]:
        names = [Path(p).name for p in self.ingredients]
        return {g: {n: round(float(self.weights[gi, i]), 6) for i, n in enumerate(names)}
                for gi, g in enumerate(self.groups)}  # fmt: skip


def _states(ingredients: Sequence[str | Path], base: str | Path | None, form: str):
    from mergekit_clip.detector.io import detector_spec, load_detector, read_state_dict

    specs = [detector_spec(p) for p in ingredients]
    for path, spec in zip(ingredients, specs):
        head = spec.head
        if head.num_classes != 2 or tuple(head.labels) != ("real", "fake"):
            raise LearnedMergeError(
                f"{path}: head {list(head.labels)} ({head.num_classes} logits): a learned merge takes 2-logit "
                "(real, fake) heads; merge once with mergekit to reconcile it"
            )
    template = load_detector(ingredients[0])
    names = list(template.state_dict())
    states = []
    for path in ingredients:
        sd = read_state_dict(path)
        missing = [n for n in names if n not in sd]
        if missing:
            raise LearnedMergeError(f"{path}: lacks tensors {missing[:3]} the first ingredient has")
        states.append({n: sd[n].float() for n in names})
    base_state = None
    if form == "task_arithmetic":
        if base is None:
            raise LearnedMergeError("task_arithmetic: give the base model (the family's base/)")
        sd = read_state_dict(base)
        base_state = {n: sd[n].float() if n in sd else torch.stack([s[n] for s in states]).mean(0) for n in names}
    return template, names, states, base_state


class _Mixer(torch.nn.Module):
    def __init__(self, names, states, base_state, groups, options: LearnOptions):
        super().__init__()
        self.names, self.options = names, options
        self.index = {n: gi for gi, (_, members) in enumerate(groups.items()) for n in members}
        self.stacks = {n: torch.stack([s[n] for s in states]) for n in names}  # (ingredients, *shape)
        self.base = base_state
        if base_state is not None:
            self.stacks = {n: self.stacks[n] - base_state[n] for n in names}  # task vectors
        init = 0.0 if options.form == "linear" else options.init
        self.alpha = torch.nn.Parameter(torch.full((len(groups), len(states)), float(init)))

    def to_device(self, device):
        self.stacks = {n: t.to(device) for n, t in self.stacks.items()}
        if self.base is not None:
            self.base = {n: t.to(device) for n, t in self.base.items()}
        return self.to(device)

    def weights(self) -> torch.Tensor:
        return self.alpha.softmax(dim=1) if self.options.form == "linear" else self.alpha

    def merged(self, weights: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        w = self.weights() if weights is None else weights
        out = {}
        for n in self.names:
            stack = self.stacks[n]
            coeff = w[self.index[n]].view(-1, *([1] * (stack.dim() - 1)))
            mixed = (coeff * stack).sum(dim=0)
            out[n] = mixed if self.base is None else self.base[n] + mixed
        return out


def load_frames(paths: Sequence[str], preprocess) -> torch.Tensor:
    """(N, 3, S, S) float frames, normalised with the detector's mean and std (the eval transform)."""
    from eval.predict import load_frame

    frames = torch.stack([load_frame(p, preprocess, "exact") for p in paths])
    mean = torch.tensor(preprocess.mean).view(1, 3, 1, 1)
    std = torch.tensor(preprocess.std).view(1, 3, 1, 1)
    return (frames - mean) / std


def learn_merge(
    ingredients: Sequence[str | Path],
    frames: torch.Tensor,
    labels: torch.Tensor | None,
    options: LearnOptions,
    base: str | Path | None = None,
) -> LearnedMerge:
    """Learn the coefficients on ``frames`` ((N, 3, S, S), normalised); ``labels`` (N,) for ``labelled``."""
    from torch.func import functional_call

    if options.form not in FORMS or options.objective not in OBJECTIVES:
        raise LearnedMergeError(f"form {options.form!r} / objective {options.objective!r}: choose a form from "
                                f"{list(FORMS)} and an objective from {list(OBJECTIVES)}")  # fmt: skip
    if options.objective == "labelled" and (labels is None or len(set(labels.tolist())) < 2):
        raise LearnedMergeError("objective 'labelled' needs frames of both labels (real = 0, fake = 1)")
    if len(ingredients) < 2:
        raise LearnedMergeError(f"a learned merge needs at least 2 ingredients, got {len(ingredients)}")
    template, names, states, base_state = _states(ingredients, base, options.form)
    groups = layer_groups(names)
    device = torch.device(options.device)
    mixer = _Mixer(names, states, base_state, groups, options).to_device(device)
    template = template.to(device).eval()
    for p in template.parameters():
        p.requires_grad_(False)
    optimiser = torch.optim.Adam([mixer.alpha], lr=options.lr)
    gen = torch.Generator().manual_seed(options.seed)
    log = []
    for step in range(options.steps):
        batch = torch.randperm(len(frames), generator=gen)[: options.batch_size]
        logits = functional_call(template, mixer.merged(), (frames[batch].to(device),))
        if options.objective == "labelled":
            loss = torch.nn.functional.cross_entropy(logits, labels[batch].to(device))
        else:
            p = logits.softmax(dim=1)
            loss = -(p * p.clamp_min(1e-12).log()).sum(dim=1).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if not math.isfinite(loss.item()):
            raise LearnedMergeError(f"loss is {loss.item()} at step {step}: lower the learning rate")
        log.append({"step": step, "loss": round(loss.item(), 6)})
    with torch.no_grad():
        # the recipe carries the weights as float32 numbers: the final merge uses exactly those
        weights = mixer.weights().detach().float().cpu()
        state = {n: t.detach().cpu() for n, t in mixer.merged(weights.to(device)).items()}
    return LearnedMerge(options, [str(p) for p in ingredients], None if base is None else str(base), groups,
                        weights, state, log)  # fmt: skip


def write_learned_merge(result: LearnedMerge, out: Path, header: str = "learned layer-wise merge") -> Path:
    """Merge the emitted recipe with mergekit in process (as ``mergekit-yaml`` would) into ``out/model``; write
    ``out/recipe.yml`` and ``out/learned.json`` (coefficients, loss log, transductive flag)."""
    import json

    import mergekit.merge
    from mergekit.merge import MergeOptions

    from mergekit_clip.recipe import recipe_yaml, validate_recipe

    out.mkdir(parents=True, exist_ok=True)
    recipe = result.recipe()
    (out / "recipe.yml").write_text(recipe_yaml(recipe, f"{header}\nrun with:   mergekit-yaml {out / 'recipe.yml'} "
                                                       "OUT_DIR"))  # fmt: skip
    info = {"form": result.options.form, "objective": result.options.objective,
            "transductive": result.transductive, "options": result.options.__dict__, "weights": result.table(),
            "loss": result.log}  # fmt: skip
    (out / "learned.json").write_text(json.dumps(info, indent=1) + "\n")
    options = MergeOptions(random_seed=0, quiet=True, write_model_card=False, copy_tokenizer=False)
    # last: the model folder (written atomically by the plugin) marks a finished learned merge
    mergekit.merge.run_merge(validate_recipe(recipe), str(out / "model"), options)
    return out / "model"
