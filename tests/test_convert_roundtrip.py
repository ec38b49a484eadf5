"""Round trips keep every field of the detector config: export --to hf -> load_detector, and
export -> import --from hf -> export -> load, over every preprocessing mode and head variant (and an adapter).

Before issue #12 the loader read only size/mean/std from an export, so a bilinear or squash detector came back
bicubic/shortest, and adapters could not be exported at all.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from mergekit_clip.convert import convert_source, export_hf
from mergekit_clip.convert.base import write_converted
from mergekit_clip.detector.io import create_detector, detector_spec, load_detector, read_state_dict, save_detector
from mergekit_clip.detector.spec import AdapterSpec, HeadSpec, PreprocessSpec

PREPROCESS = [
    PreprocessSpec(image_size=32, interpolation=interp, resize_mode=mode, mean=mean, std=std)
    for (interp, mode), (mean, std) in zip(
        itertools.product(("bicubic", "bilinear"), ("shortest", "squash")),
        itertools.cycle([((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)), ((0.48145466, 0.4578275, 0.40821073),
                                                                 (0.26862954, 0.26130258, 0.27577711))]),
    )
]  # fmt: skip
HEADS = {
    "two-logit": HeadSpec(),
    "two-logit-fake-first": HeadSpec(labels=("fake", "real")),
    "one-logit-fake": HeadSpec(num_classes=1, labels=("fake",)),
    "one-logit-pair": HeadSpec(num_classes=1, labels=("real", "fake")),
    "projected-normalized": HeadSpec(feature="projected", normalize=True),
    "patch-mean": HeadSpec(feature="patch_mean"),
    "adapter": HeadSpec(normalize=True),
}
CASES = [(name, pre) for name in HEADS for pre in PREPROCESS]


def _spec(tiny_spec, head_name: str, pre: PreprocessSpec):
    adapter = AdapterSpec(hidden=8) if head_name == "adapter" else None
    return tiny_spec.model_copy(update={"head": HEADS[head_name], "adapter": adapter, "preprocess": pre})


def _same_outputs(a, b) -> None:
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(a(images), b(images), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("head_name", "pre"), CASES, ids=[f"{h}-{p.interpolation}-{p.resize_mode}" for h, p in CASES])
def test_every_config_field_survives_export_and_import(tmp_path, tiny_spec, head_name, pre):
    spec = _spec(tiny_spec, head_name, pre)
    original = create_detector(spec, seed=3)
    save_detector(original, tmp_path / "ours", provenance={"seed": 3})

    export_hf(tmp_path / "ours", tmp_path / "hf")
    assert detector_spec(tmp_path / "hf") == spec  # every field: geometry, head, labels, adapter, preprocessing
    loaded = load_detector(tmp_path / "hf")
    assert loaded.spec == spec
    _same_outputs(original, loaded)

    converted = convert_source("hf", tmp_path / "hf")
    assert converted.spec == spec
    write_converted(converted, tmp_path / "imported")
    assert detector_spec(tmp_path / "imported") == spec
    export_hf(tmp_path / "imported", tmp_path / "hf2")
    again = load_detector(tmp_path / "hf2")
    assert again.spec == spec
    _same_outputs(original, again)
    ours, back = read_state_dict(tmp_path / "ours"), read_state_dict(tmp_path / "imported")
    assert set(ours) == set(back) and all(torch.equal(ours[k], back[k]) for k in ours)


def test_image_processor_settings_are_read_when_no_detector_preprocess(tmp_path, tiny_spec):
    """A plain Hugging Face directory (no detector_preprocess): resample and resize mode come from the processor."""
    import json

    pre = PreprocessSpec(image_size=32, interpolation="bilinear", resize_mode="squash")
    save_detector(create_detector(_spec(tiny_spec, "two-logit", pre), seed=0), tmp_path / "ours")
    export_hf(tmp_path / "ours", tmp_path / "hf")
    cfg_file = tmp_path / "hf" / "config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg.pop("detector_preprocess")
    cfg_file.write_text(json.dumps(cfg))
    assert detector_spec(tmp_path / "hf").preprocess == pre
    assert convert_source("hf", tmp_path / "hf").spec.preprocess == pre
