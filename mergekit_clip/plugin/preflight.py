"""Checks run before mergekit plans a merge of CLIP detectors, so bad input fails before any output exists.

Each problem raises :class:`MergeInputError` naming the model and the field or tensor: missing directory,
config or weights; truncated safetensors; mixed layouts; different width/depth/heads/patch/image size;
head features or label sets that cannot be reconciled; missing tensors; tensors whose shapes disagree;
tensors the architecture does not know (mergekit would drop them silently); preprocessing that differs in
image size or mean/std (a difference in interpolation or resize mode only is stated in the merge log).
NaN/Inf values are caught while tensors stream (see :mod:`mergekit_clip.plugin.heads`), or, when the
``gather_hook`` seam is inactive, by :func:`scan_finite` before the merge; that lesser mode also refuses
merges that need the head policy (see :mod:`mergekit_clip.plugin.seams`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mergekit_clip.detector.io import (
    ARCHITECTURE,
    DetectorFormatError,
    check_finite_weights,
    check_safetensors_file,
    detector_spec,
    model_layout,
    read_config_json,
    weight_files,
)
from mergekit_clip.detector.labels import normalize_labels
from mergekit_clip.detector.layouts import (
    ADAPTER_TENSORS,
    HF_PREFIX,
    HF_TEXT_TENSOR,
    OPTIONAL_TENSORS,
    carried_tensor_names,
    hf_vision_tensor_names,
    open_clip_visual_tensor_names,
)
from mergekit_clip.detector.spec import CANONICAL_LABELS, DetectorSpec
from mergekit_clip.plugin.heads import MergeContext, MergeInputError, ModelHeadInfo

GEOMETRY_FIELDS = ("image_size", "patch_size", "width", "layers", "heads", "mlp_ratio", "act")


@dataclass
class InputModel:
    ref: object  # mergekit ModelReference
    path: Path
    layout: str
    spec: DetectorSpec
    tensors: dict[str, tuple]  # name -> shape, from the file headers


def looks_like_ours(path: str) -> bool:
    """A local directory holding a CLIP detector or Hugging Face CLIP model."""
    if not os.path.isdir(path):
        return False
    try:
        model_layout(read_config_json(path))
        return True
    except DetectorFormatError:
        return False


def collect_inputs(merge_config) -> list[InputModel] | None:
    """Inspect every referenced model; ``None`` when the merge does not involve CLIP detectors at all."""
    refs = list(merge_config.referenced_models())
    local = [r for r in refs if os.path.isdir(r.model.path)]
    if not any(looks_like_ours(r.model.path) for r in local):
        return None
    inputs = []
    for ref in refs:
        path = Path(ref.model.path)
        if not path.is_dir():
            raise MergeInputError(f"{ref.model.path}: no such model directory")
        try:
            layout = model_layout(read_config_json(path))
            spec = detector_spec(path)
            files = weight_files(path)
            shapes: dict[str, tuple] = {}
            for file in files:
                if file.suffix == ".safetensors":
                    header = check_safetensors_file(file)
                    shapes.update({k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"})
        except (DetectorFormatError, ValueError) as e:
            raise MergeInputError(f"{path}: {e}") from e
        if spec.head is not None:
            try:
                normalize_labels(spec.head.labels, source=f"{path}/config.json head.labels")
            except ValueError as e:
                raise MergeInputError(str(e)) from e
        inputs.append(InputModel(ref=ref, path=path, layout=layout, spec=spec, tensors=shapes))
    return inputs


def _family(layout: str) -> str:
    return "open_clip detector" if layout == ARCHITECTURE else "Hugging Face CLIP"


def _require_same(m: InputModel, other: InputModel, part: str, names, why: str) -> None:
    """Raise unless ``m`` and ``other`` agree on every field ``names`` of their spec's ``part``."""
    for name in names:
        mine, theirs = getattr(getattr(m.spec, part), name), getattr(getattr(other.spec, part), name)
        if mine != theirs:
            raise MergeInputError(f"{m.path}: {part}.{name} is {mine!r} but {other.path} has {theirs!r}; {why}")


def check_compatible(inputs: list[InputModel], base_ref) -> InputModel:
    """Raise on any incompatibility; returns the reference model (the base, else the first input)."""
    reference = next((m for m in inputs if base_ref is not None and m.ref == base_ref), inputs[0])
    for m in inputs:
        if _family(m.layout) != _family(reference.layout):
            raise MergeInputError(
                f"{m.path}: {_family(m.layout)} layout ({m.layout}) cannot be merged with "
                f"{reference.path} ({_family(reference.layout)}, {reference.layout}); convert one of them with "
                "`mergekit-clip import` first"
            )
        _require_same(m, reference, "backbone", GEOMETRY_FIELDS, "only fine-tunes of one architecture can be merged")
    _check_forensics_adapters(inputs)
    heads = [m for m in inputs if m.spec.head is not None]
    for m in heads[1:]:
        _require_same(m, heads[0], "head", ("feature", "normalize"), "heads on different features cannot be merged")
    adapters = [m for m in inputs if m.spec.adapter is not None]
    for m in adapters[1:]:
        if m.spec.adapter != adapters[0].spec.adapter:
            raise MergeInputError(f"{m.path}: adapter {m.spec.adapter} differs from {adapters[0].path}")
    _check_tensors(inputs)
    _check_unknown_tensors(inputs)
    return reference


def _check_forensics_adapters(inputs: list[InputModel]) -> None:
    """ForensicsAdapter detectors merge only with ForensicsAdapter detectors of the same adapter geometry."""
    fas = [m for m in inputs if m.spec.forensics_adapter is not None]
    if not fas:
        return
    plain = next((m for m in inputs if m.spec.forensics_adapter is None), None)
    if plain is not None:
        raise MergeInputError(
            f"{fas[0].path} is a ForensicsAdapter detector but {plain.path} is not; a ForensicsAdapter merges only "
            "with ForensicsAdapter detectors (its family's base is the saved adapter initialisation)"
        )
    first = fas[0].spec.forensics_adapter
    for m in fas[1:]:
        mine = m.spec.forensics_adapter
        diff = [k for k in type(mine).model_fields if getattr(mine, k) != getattr(first, k)]
        if diff:
            k = diff[0]
            raise MergeInputError(
                f"{m.path}: forensics_adapter.{k} is {getattr(mine, k)!r} but {fas[0].path} has "
                f"{getattr(first, k)!r}; ForensicsAdapters of different geometry cannot be merged"
            )


def preprocessing_source(inputs: list[InputModel], reference: InputModel) -> InputModel:
    """Whose preprocessing the merged detector keeps: the reference if it is a detector, else the first detector.

    A bare pretrained base carries whatever preprocessing its folder states (often none, i.e. the defaults); the
    heads were trained on the fine-tunes' inputs, so those decide.
    """
    if reference.spec.head is not None:
        return reference
    return next((m for m in inputs if m.spec.head is not None), reference)


def preprocessing_notes(inputs: list[InputModel], reference: InputModel) -> list[str]:
    """Refuse detectors fed different pixels (size, mean/std); return notes for harmless differences."""
    source = preprocessing_source(inputs, reference)
    ref = source.spec.preprocess
    notes = []
    for m in inputs:
        pre = m.spec.preprocess
        for name in ("image_size", "mean", "std", "interpolation", "resize_mode"):
            mine, theirs = getattr(pre, name), getattr(ref, name)
            if mine == theirs:
                continue
            if name in ("image_size", "mean", "std") and m.spec.head is not None:
                raise MergeInputError(
                    f"{m.path}: preprocess.{name} is {mine} but {source.path} has {theirs}; detectors trained on "
                    "differently normalised inputs cannot be merged"
                )
            what = "mean/std and size agree" if name in ("interpolation", "resize_mode") else "it has no head"
            notes.append(
                f"preprocessing: {m.path} uses preprocess.{name}={mine}, the merged detector uses {theirs} "
                f"(from {source.path}); {what}"
            )
    return notes


def _expected_tensors(m: InputModel) -> list[str]:
    layers = m.spec.backbone.layers
    if m.layout == ARCHITECTURE:
        pre, per_layer, post = open_clip_visual_tensor_names(layers)
        names = pre + [n for layer in per_layer for n in layer] + post
        if m.spec.forensics_adapter is not None:
            return names + carried_tensor_names(m.spec)
        if m.spec.head is not None:
            names += ["head.weight", "head.bias"]
        return names
    prefixed = any(k.startswith(HF_PREFIX) for k in m.tensors)
    names = hf_vision_tensor_names(layers, prefix=HF_PREFIX if prefixed else "")
    if m.spec.head is not None:
        src = "classifier" if m.layout == "CLIPForImageClassification" else "head"
        names += [f"{src}.weight", f"{src}.bias"]
    return names


def _canonical(name: str) -> str:
    return name[len(HF_PREFIX) :] if name.startswith(HF_PREFIX) else name


def _check_tensors(inputs: list[InputModel]) -> None:
    shapes: dict[str, tuple[tuple, Path]] = {}
    for m in inputs:
        if not m.tensors:  # legacy .bin: names are checked when mergekit loads them
            continue
        for name in _expected_tensors(m):
            if name not in m.tensors:
                raise MergeInputError(f"{m.path}: missing tensor {name}")
            if name.startswith(("head.", "classifier.")):
                continue  # 1- and 2-logit heads legitimately differ; reconciled by the head policy
            key = _canonical(name)
            shape = m.tensors[name]
            if key in shapes and shapes[key][0] != shape:
                raise MergeInputError(
                    f"{m.path}: tensor {name} has shape {list(shape)} but {shapes[key][1]} has "
                    f"{list(shapes[key][0])}"
                )
            shapes.setdefault(key, (shape, m.path))


def _known_tensors(m: InputModel) -> set[str]:
    names = set(_expected_tensors(m)) | set(ADAPTER_TENSORS)
    if m.layout != ARCHITECTURE:
        names |= set(OPTIONAL_TENSORS)
    return names


def _check_unknown_tensors(inputs: list[InputModel]) -> None:
    """A tensor the architecture has no place for would be dropped by mergekit without a word: refuse it."""
    for m in inputs:
        known = _known_tensors(m)
        unknown = sorted(
            k for k in m.tensors
            if k not in known and not k.endswith("position_ids")  # HF buffers, not weights
            and not (m.layout == "CLIPModel" and HF_TEXT_TENSOR.match(k))  # CLIPModel: the vision tower is merged
        )  # fmt: skip
        if unknown:
            more = f" ... ({len(unknown)} in all)" if len(unknown) > 6 else ""
            raise MergeInputError(
                f"{m.path}: tensor(s) {unknown[:6]}{more} are not part of the {m.layout} layout; mergekit would "
                "drop them from the merge. Remove them, or import the model with `mergekit-clip import`"
            )


def head_policy_need(inputs: list[InputModel]) -> str | None:
    """Why these inputs need the head policy (the gather_hook seam), or ``None`` when mergekit can take them as is."""
    for m in inputs:
        head = m.spec.head
        if head is not None and (head.num_classes != 2 or tuple(head.labels) != CANONICAL_LABELS):
            return f"{m.path}: head {list(head.labels)} with {head.num_classes} logit(s) must be reconciled"
    for name in OPTIONAL_TENSORS:
        holders = [m for m in inputs if m.tensors and name in m.tensors]
        lacking = [m for m in inputs if m.tensors and name not in m.tensors]
        if holders and lacking:
            return f"{lacking[0].path} has no {name} (which {holders[0].path} has)"
    return None


def check_seams(inputs: list[InputModel]) -> None:
    """Refuse what the inactive seams cannot merge correctly (see :mod:`mergekit_clip.plugin.seams`)."""
    from mergekit_clip.plugin.seams import states

    found = states()

    def why(name: str) -> str | None:
        state = found.get(name)
        return None if state is not None and state.active else (state.reason if state else "not installed")

    hint = "(see `mergekit-clip plugin status`)"
    if why("architectures"):
        raise MergeInputError(
            f"cannot merge CLIP detectors: the architectures seam is inactive: {why('architectures')} {hint}"
        )
    ours = [m for m in inputs if m.layout == ARCHITECTURE]
    if ours and why("autoconfig"):
        raise MergeInputError(
            f"{ours[0].path}: a {ARCHITECTURE} directory needs the autoconfig seam, which is inactive: "
            f"{why('autoconfig')} {hint}"
        )
    if why("gather_hook"):
        need = head_policy_need(inputs)
        if need:
            raise MergeInputError(
                f"{need}: the head policy needs the gather_hook seam, which is inactive: {why('gather_hook')} "
                f"{hint}; refusing rather than merging the heads wrongly"
            )
        scan_finite(inputs)


def scan_finite(inputs: list[InputModel]) -> None:
    """Read every tensor once and refuse NaN/Inf (what the gather hook does while streaming)."""
    for m in inputs:
        try:
            check_finite_weights(m.path)
        except DetectorFormatError as e:
            raise MergeInputError(str(e)) from e


def preflight(merge_config) -> tuple[MergeContext, list[InputModel], InputModel] | None:
    inputs = collect_inputs(merge_config)
    if inputs is None:
        return None
    base_ref = merge_config.base_model
    reference = check_compatible(inputs, base_ref)
    check_seams(inputs)
    ctx = MergeContext(
        models={
            m.ref: ModelHeadInfo(name=str(m.path), head=m.spec.head, is_base=base_ref is not None and m.ref == base_ref)
            for m in inputs
        }
    )
    for note in preprocessing_notes(inputs, reference):
        ctx.note(note)
    return ctx, inputs, reference
