"""Wraps ``mergekit.merge.run_merge`` for CLIP detector merges: preflight, atomic output, merged config.

mergekit writes the base model's ``config.json`` into the output; for detectors that describes the wrong
model (a bare CLIP base has no head). After mergekit has written the tensors into a temporary directory,
we write the config of the merged detector (architecture, labels, preprocessing, merge provenance), a
``merge_log.json`` with the head policy and what it did, and only then move the directory into place.
Merges that do not involve CLIP detectors go to stock mergekit untouched.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from mergekit_clip.detector.io import ARCHITECTURE, atomic_directory, read_config_json
from mergekit_clip.detector.layouts import HF_HEAD_KEY, HF_PROJECTION, detector_hf_fields, hf_vision_config
from mergekit_clip.detector.spec import CANONICAL_LABELS, DetectorConfig, DetectorSpec, HeadSpec
from mergekit_clip.plugin.heads import HEAD_POLICY, MergeContext, MergeInputError, merge_context
from mergekit_clip.plugin.preflight import InputModel, preflight, preprocessing_source

LOG = logging.getLogger("mergekit_clip.merge")


def merged_head(inputs: list[InputModel]) -> HeadSpec | None:
    heads = [m.spec.head for m in inputs if m.spec.head is not None]
    if not heads:
        return None
    return heads[0].model_copy(update={"num_classes": 2, "labels": CANONICAL_LABELS})


def merge_provenance(merge_config, inputs: list[InputModel], ctx: MergeContext) -> dict:
    base = merge_config.base_model
    return {
        "tool": "mergekit-yaml + mergekit-clip",
        "method": merge_config.merge_method,
        "base_model": str(Path(base.model.path).absolute()) if base is not None else None,
        "models": [str(m.path.absolute()) for m in inputs if base is None or m.ref != base],
        "parameters": merge_config.model_dump(mode="json").get("parameters"),
        "dtype": merge_config.dtype,
        "head_policy": HEAD_POLICY,
        "events": list(ctx.events),
    }


def _kernel_counts() -> dict:
    from mergekit_clip.plugin.kernels import fast_sparsify

    return {"replays": dict(fast_sparsify.replays), "fallbacks": dict(fast_sparsify.fallbacks)}


def kernel_report(before: dict) -> dict:
    """Which of the plugin's bit-identical kernels ran, and how this merge's ambiguous ties were resolved."""
    import mergekit.sparsify as sp
    from mergekit.merge_methods.generalized_task_arithmetic import GeneralizedTaskArithmeticMerge

    from mergekit_clip.plugin.kernels import fast_sparsify, inplace_merge

    now = _kernel_counts()

    def during(key: str) -> dict:
        counts = {name: n - before[key].get(name, 0) for name, n in now[key].items()}
        return {name: n for name, n in counts.items() if n}

    return {
        "fast_sparsify": sp.magnitude is fast_sparsify.magnitude,
        "inplace_merge_group": GeneralizedTaskArithmeticMerge.merge_group is inplace_merge.merge_group,
        "tie_mode": fast_sparsify.tie_mode(),
        "tie_replays": during("replays"),  # ambiguous ties resolved by replaying the CPU sort
        "stock_sort_fallbacks": during("fallbacks"),  # tensors handed to stock's full sort
    }


def merged_spec(inputs: list[InputModel], reference: InputModel) -> DetectorSpec:
    """What the merged detector is: the reference's backbone, the detectors' preprocessing, the reconciled head."""
    adapter = next((m.spec.adapter for m in inputs if m.spec.adapter is not None), None)
    head = merged_head(inputs)
    return DetectorSpec(
        backbone=reference.spec.backbone,
        head=head,
        adapter=adapter if head is not None else None,
        preprocess=preprocessing_source(inputs, reference).spec.preprocess,
        forensics_adapter=reference.spec.forensics_adapter,  # preflight: all inputs have the same one, or none
    )


def _write_detector_config(out: Path, inputs, reference: InputModel, provenance: dict) -> None:
    spec = merged_spec(inputs, reference)
    DetectorConfig.from_spec(spec, provenance={"merge": provenance}).save_pretrained(str(out))


def _write_hf_config(out: Path, inputs, reference: InputModel, provenance: dict) -> None:
    from transformers import CLIPConfig, CLIPVisionConfig

    base_cfg = read_config_json(reference.path)
    vision = {k: v for k, v in hf_vision_config(base_cfg).items() if k not in ("architectures", "transformers_version")}
    vision.pop("model_type", None)
    vision.setdefault("projection_dim", base_cfg.get("projection_dim", 512))
    spec = merged_spec(inputs, reference)
    head = spec.head
    has_projection = any(k == HF_PROJECTION for k in _output_tensor_names(out))
    if head is not None and head.feature == "patch_mean":
        text = base_cfg.get("text_config") or {}
        config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=vision["projection_dim"])
        config.architectures = ["CLIPForImageClassification"]
        config.id2label = {0: "real", 1: "fake"}
        config.label2id = {"real": 0, "fake": 1}
    else:
        config = CLIPVisionConfig(**vision)
        config.architectures = ["CLIPVisionModelWithProjection" if has_projection else "CLIPVisionModel"]
    for key, value in detector_hf_fields(spec).items():  # head (not for a classifier), adapter, preprocessing
        if value is not None and not (key == HF_HEAD_KEY and head.feature == "patch_mean"):
            setattr(config, key, value)
    config.mergekit_clip = {"merge": provenance}
    config.save_pretrained(str(out))


def _output_tensor_names(out: Path) -> list[str]:
    from mergekit_clip.detector.io import check_safetensors_file, weight_files

    names = []
    for file in weight_files(out):
        names += [k for k in check_safetensors_file(file) if k != "__metadata__"]
    return names


def _write_card(out: Path, provenance: dict, config_source: str | None, hf: bool) -> None:
    from mergekit_clip.detector.card import write_card
    from mergekit_clip.detector.io import detector_spec

    write_card(out, detector_spec(out), {"merge": provenance}, recipe=config_source, hf=hf)
    if config_source:
        (out / "mergekit_config.yml").write_text(config_source)


def _check_replaceable(out: Path) -> None:
    if out.exists() and any(out.iterdir()) and not (out / "config.json").exists():
        raise MergeInputError(f"{out} exists and is not a model directory; refusing to replace it")


def install_run_merge_hook() -> None:
    import mergekit.merge as merge_module

    if getattr(merge_module.run_merge, "_mergekit_clip", False):
        return
    original = merge_module.run_merge

    def run_merge(merge_config, out_path, options, config_source=None):
        found = preflight(merge_config)
        if found is None:
            return original(merge_config, out_path, options=options, config_source=config_source)
        ctx, inputs, reference = found
        from mergekit_clip.plugin.recipe import check_output_location, check_recipe, current_recipe_file

        check_recipe(merge_config, config_source, current_recipe_file())
        out = Path(out_path).absolute()
        check_output_location(out, [m.path for m in inputs])
        _check_replaceable(out)
        from mergekit_clip.plugin.kernels.fast_sparsify import tie_mode

        tie_mode()  # a bad MERGEKIT_CLIP_SPARSIFY_TIES fails here, before any work, not when the log is written
        LOG.warning(
            "mergekit-clip: %s merge of %d CLIP detector input(s) (%s layout); head policy: %s",
            merge_config.merge_method,
            len(inputs),
            reference.layout,
            HEAD_POLICY,
        )
        # Cards from mergekit query the Hub for relative paths, and CLIP dirs carry no tokenizer to copy.
        options = options.model_copy(update={"write_model_card": False, "copy_tokenizer": False})
        with atomic_directory(out, overwrite=True) as tmp, merge_context(ctx):
            counts_before = _kernel_counts()
            try:
                original(merge_config, str(tmp), options=options, config_source=config_source)
            except RuntimeError as e:  # mergekit refuses a recipe parameter or dtype this way (no file named)
                if "parameter" not in str(e) and "dtype" not in str(e):
                    raise
                raise MergeInputError(f"{current_recipe_file()}: {str(e).splitlines()[0]}") from e
            provenance = merge_provenance(merge_config, inputs, ctx)
            provenance["kernels"] = kernel_report(counts_before)
            if reference.layout == ARCHITECTURE:
                _write_detector_config(tmp, inputs, reference, provenance)
            else:
                _write_hf_config(tmp, inputs, reference, provenance)
            (tmp / "merge_log.json").write_text(json.dumps(provenance, indent=2) + "\n")
            _write_card(tmp, provenance, config_source or merge_config.to_yaml(), reference.layout != ARCHITECTURE)
        LOG.warning("mergekit-clip: wrote merged detector to %s", out)

    run_merge._mergekit_clip = True
    run_merge.__wrapped__ = original
    merge_module.run_merge = run_merge
