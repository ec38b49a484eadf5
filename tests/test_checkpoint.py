"""Detector directories: bit-exact round trip, atomic writes, pretrained weights, HF layout mapping."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from mergekit_clip.detector.io import (
    DetectorFormatError,
    atomic_directory,
    create_detector,
    load_detector,
    load_pretrained_backbone,
    read_state_dict,
    save_detector,
)
from mergekit_clip.detector.layouts import hf_vision_to_open_clip, open_clip_to_hf_vision
from mergekit_clip.detector.spec import AdapterSpec, HeadSpec, spec_from_open_clip

IMAGES = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "head,adapter",
    [
        (HeadSpec(), None),
        (HeadSpec(feature="projected", normalize=True), AdapterSpec(hidden=8)),
        (HeadSpec(feature="patch_mean", num_classes=1), None),
    ],
)
def test_round_trip_is_bit_exact(tmp_path, tiny_spec, head, adapter):
    spec = tiny_spec.model_copy(update={"head": head, "adapter": adapter})
    model = create_detector(spec, seed=3).eval()
    save_detector(model, tmp_path / "det", provenance={"seed": 3})
    loaded = load_detector(tmp_path / "det")
    assert loaded.spec == spec
    original = model.state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, original[key]), key
    assert torch.equal(loaded(IMAGES), model(IMAGES))
    assert json.loads((tmp_path / "det" / "config.json").read_text())["provenance"] == {"seed": 3}


def test_seeded_creation_is_reproducible(tiny_spec):
    a, b = create_detector(tiny_spec, seed=1), create_detector(tiny_spec, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_save_refuses_existing_and_leaves_nothing_on_failure(tmp_path, tiny_spec):
    model = create_detector(tiny_spec, seed=0)
    save_detector(model, tmp_path / "det")
    with pytest.raises(FileExistsError, match="already exists"):
        save_detector(model, tmp_path / "det")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_directory(tmp_path / "other") as tmp:
            (tmp / "partial").write_text("x")
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["det"]


def test_one_logit_head_scores_its_positive_label(tiny_spec):
    fake_positive = create_detector(tiny_spec.model_copy(update={"head": HeadSpec(num_classes=1)}), seed=0)
    logits = fake_positive(IMAGES)
    torch.testing.assert_close(fake_positive.fake_probability(IMAGES), torch.sigmoid(logits[:, 0]))
    real_positive = create_detector(tiny_spec.model_copy(update={"head": HeadSpec(num_classes=1, labels=("real",))}), 0)
    torch.testing.assert_close(real_positive.fake_probability(IMAGES), 1 - torch.sigmoid(real_positive(IMAGES)[:, 0]))


def test_reversed_label_order_reads_the_fake_row(tiny_spec):
    model = create_detector(tiny_spec.model_copy(update={"head": HeadSpec(labels=("fake", "real"))}), seed=0)
    torch.testing.assert_close(model.fake_probability(IMAGES), torch.softmax(model(IMAGES), -1)[:, 0])


def test_pretrained_open_clip_file_loads_into_visual(tmp_path, tiny_spec):
    source = create_detector(tiny_spec, seed=9)
    full_clip = {f"visual.{k}": v for k, v in source.visual.state_dict().items()}
    full_clip["token_embedding.weight"] = torch.zeros(10, 4)  # the text tower is ignored
    save_file(full_clip, str(tmp_path / "clip.safetensors"))
    target = create_detector(tiny_spec, seed=0)
    loaded = load_pretrained_backbone(target, tmp_path / "clip.safetensors")
    assert len(loaded) == len(source.visual.state_dict())
    assert all(torch.equal(target.visual.state_dict()[k], v) for k, v in source.visual.state_dict().items())


def test_pretrained_file_that_does_not_fit_names_tensors(tmp_path, tiny_spec):
    wide = tiny_spec.model_copy(update={"backbone": tiny_spec.backbone.model_copy(update={"width": 128})})
    save_file(
        {f"visual.{k}": v for k, v in create_detector(wide, 0).visual.state_dict().items()}, str(tmp_path / "w.st")
    )
    (tmp_path / "w.st").rename(tmp_path / "w.safetensors")
    with pytest.raises(DetectorFormatError, match=r"does not fit the architecture.*visual\.class_embedding"):
        load_pretrained_backbone(create_detector(tiny_spec, 0), tmp_path / "w.safetensors")


def test_hf_mapping_round_trip_is_exact(tiny_spec):
    visual = {f"visual.{k}": v for k, v in create_detector(tiny_spec, 0).visual.state_dict().items()}
    back = hf_vision_to_open_clip(open_clip_to_hf_vision(visual, 2), 2)
    del visual["visual.proj"]
    assert set(back) == set(visual)
    assert all(torch.equal(back[k], v) for k, v in visual.items())


def test_openai_quick_gelu_and_geometry_from_arch_name():
    spec = spec_from_open_clip("ViT-L-14", quick_gelu=True)
    b = spec.backbone
    assert (b.width, b.layers, b.heads, b.patch_size, b.embed_dim, b.act) == (1024, 24, 16, 14, 768, "quick_gelu")
    with pytest.raises(ValueError, match="unknown open_clip architecture 'ViT-Q-99'"):
        spec_from_open_clip("ViT-Q-99")


def test_not_a_detector_is_refused(tmp_path, tiny_spec):
    with pytest.raises(DetectorFormatError, match="no config.json"):
        load_detector(tmp_path)
    bare = create_detector(tiny_spec.model_copy(update={"head": None}), 0)
    save_detector(bare, tmp_path / "bare")
    with pytest.raises(DetectorFormatError, match="no forensic head"):
        load_detector(tmp_path / "bare")
    assert "head.weight" not in read_state_dict(tmp_path / "bare")
