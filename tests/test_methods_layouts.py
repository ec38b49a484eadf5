"""Every registered merge method on every input layout, through stock mergekit's merge.

Methods come from mergekit's registry (its 20 and the plugin's), each with the parameters its spec declares;
layouts are our detector folders (headless base) and the Hugging Face CLIP layouts the plugin recognises: fine-tuned
``CLIPForImageClassification`` detectors (2-logit; 1-logit in ``hf_classifier_1logit``) over a headless base saved as
``CLIPVisionModel`` (with and without the ``vision_model.`` prefix), ``CLIPVisionModelWithProjection`` or ``CLIPModel``
(its vision tower), or over a ``CLIPForImageClassification`` base with its own head. Each merge runs through
``mergekit.merge.run_merge`` in process (what ``mergekit-yaml`` runs; one real ``mergekit-yaml`` subprocess per
layout shows the CLI path), is loaded with ``load_detector``, and is compared with a reference merge computed here:
every tensor of the vision tower is merged again by calling the method's kernel on the tensors this test gathers
from the input files itself (names mapped per layout, the base's ``vision_model.`` prefix or not), the reference
detector is the merged output with those tensors, and both detectors' forward passes must agree. Head tensors are
taken from the output (the plugin's head policy has its own tests, test_plugin_heads/test_plugin_hf).

The data-aware methods (``regmean``, ``fisher``) read statistics keyed by our tensor names: they run on our
detector folders, and on a Hugging Face layout they must be refused in one clear error (import first).
DARE and DELLA drop at random: they run at ``density: 1`` (no drop), so the reference is exact.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from convert_support import TINY_CLIP_VISION, TINY_TEXT
from merge_support import build_open_clip_family, run_mergekit_yaml
from methods_support import write_tiny_dataset
from safetensors.torch import load_file, save_file
from transformers import (
    CLIPConfig,
    CLIPForImageClassification,
    CLIPModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    CLIPVisionModelWithProjection,
)

from mergekit_clip.detector.io import load_detector, read_state_dict

VISION, TEXT = TINY_CLIP_VISION, TINY_TEXT
LAYOUTS = ("detector", "hf_vision", "hf_vision_unprefixed", "hf_vision_projection", "hf_clip_model",
           "hf_classifier_1logit", "hf_classifier_base")  # fmt: skip
DATA_AWARE = ("regmean", "fisher")
PREFIX = "vision_model."
IMAGES = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def _registered() -> dict:
    import mergekit_clip.plugin

    mergekit_clip.plugin.register()
    from mergekit.merge_methods import registry

    return {m.spec.name: m for m in registry.registered_methods()}


METHODS = _registered()
# the values this test gives each parameter a method declares (defaults for the rest); density < 1 only where the
# selection is by magnitude, never at random
VALUES = {"weight": (1.0, 0.7, 0.5), "t": 0.3, "scale": 1.0, "select_topk": 0.5, "gamma": 0.05, "alpha": 0.8}
DENSITY = {"ties": 0.7, "breadcrumbs": 0.8, "breadcrumbs_ties": 0.8, "task_arithmetic": 0.9}


def _plan(name: str) -> tuple[bool, int, dict, dict]:
    """(takes a base, how many non-base models, shared parameters, per-model parameters) from the method's spec."""
    from mergekit.merge_methods.base import BasePolicy, ParameterScope

    spec = METHODS[name].spec
    contract = spec.contract
    base = contract.base in (BasePolicy.REQUIRED, BasePolicy.OPTIONAL)
    count = 3
    if contract.max_inputs is not None:
        count = contract.max_inputs - int(base)
    if contract.max_non_base is not None:
        count = min(count, contract.max_non_base)
    shared, per_model = {}, {}
    for p in spec.parameters:
        value = DENSITY.get(name) if p.name == "density" else VALUES.get(p.name)
        if value is None:
            continue
        if p.scope is ParameterScope.SHARED:
            shared[p.name] = value
        else:
            per_model[p.name] = value
    return base, count, shared, per_model


def _recipe(name: str, paths: dict) -> dict:
    base, count, shared, per_model = _plan(name)
    models = []
    for i in range(count):
        params = {k: (v[i] if isinstance(v, tuple) else v) for k, v in per_model.items()}
        models.append({"model": str(paths[f"ft{i}"]), **({"parameters": params} if params else {})})
    cfg: dict = {"merge_method": name, "dtype": "float32", "models": models}
    if shared:
        cfg["parameters"] = shared
    if base:
        cfg["base_model"] = str(paths["base"])
        if METHODS[name].spec.contract.max_inputs == 2:  # slerp, nearswap, arcee_fusion: base + one model
            cfg["models"] = [{"model": str(paths["base"])}, *models]
    return cfg


# ------------------------------------------------------------------------------------------------ the layouts


def _hf_family(root: Path, one_logit: bool, base_kind: str) -> dict[str, Path]:
    """A pretrained tower saved as ``base_kind`` and three fine-tuned ``CLIPForImageClassification`` detectors."""
    torch.manual_seed(0)
    vcfg = CLIPVisionConfig(**VISION)
    pretrained = {k: v for k, v in CLIPVisionModelWithProjection(vcfg).state_dict().items() if k.startswith(PREFIX)}
    paths = {"base": root / "base"}
    if base_kind == "unprefixed":  # the tower saved from a bare CLIPVisionTransformer: keys without the prefix
        (root / "base").mkdir(parents=True)
        config = CLIPVisionModel(vcfg).config
        config.architectures = ["CLIPVisionModel"]
        config.save_pretrained(root / "base")
        bare = {k[len(PREFIX) :]: v.contiguous() for k, v in pretrained.items()}
        save_file(bare, str(root / "base" / "model.safetensors"))
    else:
        labelled = CLIPConfig(text_config=TEXT, vision_config=VISION, projection_dim=32, num_labels=2,
                              id2label={0: "real", 1: "fake"}, label2id={"real": 0, "fake": 1})  # fmt: skip
        model = {"classifier": lambda: CLIPForImageClassification(labelled),
                 "vision": lambda: CLIPVisionModel(vcfg), "projection": lambda: CLIPVisionModelWithProjection(vcfg),
                 "clip_model": lambda: CLIPModel(CLIPConfig(text_config=TEXT, vision_config=VISION,
                                                            projection_dim=32))}[base_kind]()  # fmt: skip
        state = model.state_dict()
        state.update({k: v.clone() for k, v in pretrained.items() if k in state})
        model.load_state_dict(state)
        model.save_pretrained(root / "base")
    labels = 1 if one_logit else 2
    cfg = CLIPConfig(text_config=TEXT, vision_config=VISION, projection_dim=32, num_labels=labels)
    names = {0: "fake"} if one_logit else {0: "real", 1: "fake"}
    cfg.id2label, cfg.label2id = names, {v: k for k, v in names.items()}
    gen = torch.Generator().manual_seed(1)
    for i in range(3):
        model = CLIPForImageClassification(copy.deepcopy(cfg))
        state = model.state_dict()
        for key, value in pretrained.items():
            noise = 0.02 * torch.randn(value.shape, generator=gen)
            state[key] = value + noise * (value.std() if value.numel() > 1 else 1)
        state["classifier.weight"] = torch.randn(state["classifier.weight"].shape, generator=gen)
        state["classifier.bias"] = torch.randn(labels, generator=gen) * 0.1
        model.load_state_dict(state)
        model.save_pretrained(root / f"ft{i}")
        paths[f"ft{i}"] = root / f"ft{i}"
    return paths


@pytest.fixture(scope="module")
def layouts(tmp_path_factory, tiny_spec) -> dict[str, dict[str, Path]]:
    from mergekit_clip.stats.compute import compute_stats

    root = tmp_path_factory.mktemp("layouts")
    out = {"detector": build_open_clip_family(root / "detector", tiny_spec, [tiny_spec.head] * 3, base_head=False)}
    json_root, data_root = write_tiny_dataset(root)
    for i in range(3):
        for kind in ("gram", "fisher"):
            compute_stats(out["detector"][f"ft{i}"], kind, dataset="Tiny-Set", split="train", json_root=json_root,
                          data_root=data_root, batch_size=16)  # fmt: skip
    for name, one_logit, base_kind in (("hf_vision", False, "vision"), ("hf_vision_unprefixed", False, "unprefixed"),
                                       ("hf_vision_projection", False, "projection"),
                                       ("hf_clip_model", False, "clip_model"),
                                       ("hf_classifier_1logit", True, "vision"),
                                       ("hf_classifier_base", False, "classifier")):  # fmt: skip
        out[name] = _hf_family(root / name, one_logit, base_kind)
    return out


# ------------------------------------------------------------------------------------------------ the reference


def _tensor_map(path: Path) -> dict[str, torch.Tensor]:
    """A model's tensors keyed as the merged output keys the vision tower (``vision_model.*`` for HF layouts)."""
    config = json.loads((path / "config.json").read_text())
    state = read_state_dict(path) if config.get("model_type") == "clip_detector" else load_file(
        str(path / "model.safetensors"))  # fmt: skip
    if config.get("model_type") == "clip_detector":
        return state
    return {k if k.startswith((PREFIX, "classifier.", "text_model.", "visual_", "text_", "logit")) else PREFIX + k: v
            for k, v in state.items()}  # fmt: skip


def _reference(name: str, cfg: dict, merged: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], int]:
    """The merged tensors with every tensor the inputs share merged again by the method's kernel; and how many."""
    from mergekit.merge_methods.base import TensorGroup

    from mergekit_clip.stats.store import clear_cache

    base = cfg.get("base_model")
    order = [m["model"] for m in cfg["models"]]
    if base is not None and base not in order:
        order = [base, *order]
    inputs = {p: _tensor_map(Path(p)) for p in order}
    per_model = {}
    for m in cfg["models"]:
        for key, value in m.get("parameters", {}).items():
            per_model.setdefault(key, {})[m["model"]] = value
    out, recomputed = dict(merged), 0
    clear_cache()
    for key in merged:
        if key.startswith(("head.", "classifier.")) or not all(key in t for t in inputs.values()):
            continue  # heads: the plugin's head policy, tested elsewhere
        tensors = [inputs[p][key] for p in order]
        if all(torch.equal(tensors[0], t) for t in tensors[1:]):
            out[key] = tensors[0]  # the identity shortcut: a tensor equal everywhere is written as it is
            continue
        group = TensorGroup.from_tensors(tensors, ids=order, base_index=order.index(base) if base else None, name=key)
        params = {**cfg.get("parameters", {}), **{k: {i: v[i] for i in v} for k, v in per_model.items()}}
        if base is not None:  # per-model values of the base (listed in models for slerp & co.) are not passed
            params = {k: ({i: x for i, x in v.items() if i != base} if isinstance(v, dict) else v)
                      for k, v in params.items()}  # fmt: skip
        (out[key],) = METHODS[name]((group,), parameters=params)
        recomputed += 1
    return out, recomputed


def _merge(cfg: dict, out: Path) -> None:
    import mergekit.merge
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions

    options = MergeOptions(random_seed=0, quiet=True, write_model_card=False, copy_tokenizer=False)
    mergekit.merge.run_merge(MergeConfiguration.model_validate(cfg), str(out), options)


def _check(name: str, layout: str, paths: dict, work: Path) -> str:
    cfg = _recipe(name, paths)
    out = work / f"{layout}__{name}"
    _merge(cfg, out)
    merged_file = out / "model.safetensors"
    merged = load_file(str(merged_file))
    reference, recomputed = _reference(name, cfg, merged)
    # the tower's tensors that differ between the inputs (zero-initialised biases stay equal and take the identity
    # shortcut); passthrough has one input, so every tensor takes it
    assert recomputed >= (0 if name == "passthrough" else 10), f"only {recomputed} tensors compared"
    ref_dir = work / f"{layout}__{name}__reference"
    shutil.copytree(out, ref_dir)
    save_file({k: v.contiguous() for k, v in reference.items()}, str(ref_dir / "model.safetensors"))
    ours = load_detector(out).fake_probability(IMAGES)
    theirs = load_detector(ref_dir).fake_probability(IMAGES)
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    for key, value in reference.items():
        torch.testing.assert_close(merged[key], value, rtol=1e-5, atol=1e-6, msg=lambda m, k=key: f"{k}: {m}")
    return "ok"


CELLS = [(m, layout) for layout in LAYOUTS for m in sorted(METHODS)]
FAST = {"detector": set(METHODS), "hf_vision": {"linear", "ties", "slerp", "tsv_m", "karcher"}}


def _params(cell):
    method, layout = cell
    fast = method in FAST.get(layout, {"ties", "task_arithmetic"})
    return pytest.param(method, layout, id=f"{layout}-{method}", marks=() if fast else pytest.mark.slow)


@pytest.mark.parametrize(("method", "layout"), [_params(c) for c in CELLS])
def test_method_on_layout_matches_the_reference(method, layout, layouts, tmp_path):
    paths = layouts[layout]
    if method in DATA_AWARE and layout != "detector":
        with pytest.raises(Exception, match=f"{method}: ingredient .* has no .* statistics"):
            _merge(_recipe(method, paths), tmp_path / "out")
        assert not (tmp_path / "out").exists()
        return
    _check(method, layout, paths, tmp_path)


# a mergekit-yaml process costs ~10 s here (interpreter, torch, mergekit): two layouts by default, the rest slow
YAML_FAST = ("detector", "hf_vision")


@pytest.mark.parametrize("layout", [pytest.param(x, marks=() if x in YAML_FAST else pytest.mark.slow) for x in LAYOUTS])
def test_mergekit_yaml_runs_each_layout(layout, layouts, tmp_path):
    cfg = _recipe("ties", layouts[layout])
    proc = run_mergekit_yaml(cfg, tmp_path, "ties", "--no-write-model-card")
    assert proc.returncode == 0, proc.stderr[-2000:]
    probs = load_detector(tmp_path / "ties").fake_probability(IMAGES)
    _merge(cfg, tmp_path / "in_process")
    torch.testing.assert_close(probs, load_detector(tmp_path / "in_process").fake_probability(IMAGES))


def test_every_registered_method_is_in_the_matrix():
    assert len(METHODS) >= 27 and {m for m, _ in CELLS} == set(METHODS)
    assert yaml.safe_dump(_recipe("slerp", {"base": "b", "ft0": "a", "ft1": "c", "ft2": "d"}))  # a valid document
