"""``export --to hf``: transformers loads the result, and re-import gives back the detector bit for bit."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from safetensors import safe_open
from transformers import CLIPVisionModel, CLIPVisionModelWithProjection

from mergekit_clip.cli import main
from mergekit_clip.convert import ConversionError, export_hf, import_detector
from mergekit_clip.detector.io import create_detector, load_detector, read_state_dict, save_detector
from mergekit_clip.detector.spec import BackboneSpec, DetectorSpec, HeadSpec, PreprocessSpec

BACKBONE = dict(image_size=32, patch_size=8, width=64, layers=2, heads=4, embed_dim=32)


def random_detector(spec: DetectorSpec, seed: int):
    model = create_detector(spec, seed=seed)
    with torch.no_grad():  # every tensor non-trivial, so a dropped or swapped one shows
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)) * 0.1)
    return model


SPECS = {
    "pooled-normalised-fake-first": DetectorSpec(
        backbone=BackboneSpec(**BACKBONE, act="quick_gelu", layer_norm_eps=1e-6),
        head=HeadSpec(feature="pooled", normalize=True, labels=("fake", "real")),
        preprocess=PreprocessSpec(image_size=32, mean=(0.5, 0.5, 0.5), interpolation="bilinear", resize_mode="squash"),
    ),
    "projected-one-logit": DetectorSpec(
        backbone=BackboneSpec(**BACKBONE),
        head=HeadSpec(feature="projected", num_classes=1, labels=("fake",)),
        preprocess=PreprocessSpec(image_size=32),
    ),
    "bare-backbone": DetectorSpec(
        backbone=BackboneSpec(**BACKBONE), head=None, preprocess=PreprocessSpec(image_size=32)
    ),
}


@pytest.fixture(scope="module")
def images():
    return torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("name", sorted(SPECS))
def test_export_then_import_is_exact(tmp_path, images, name):
    spec = SPECS[name]
    model = random_detector(spec, seed=len(name))
    save_detector(model, tmp_path / "det", provenance={"seed": 7})
    export_hf(tmp_path / "det", tmp_path / "hf")
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == [
        "README.md",  # the model card
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ]

    import_detector("hf", tmp_path / "hf", tmp_path / "back")
    original, back = read_state_dict(tmp_path / "det"), read_state_dict(tmp_path / "back")
    assert original.keys() == back.keys()
    for key, tensor in original.items():
        assert back[key].dtype == tensor.dtype and torch.equal(back[key], tensor), key
    reloaded = load_detector(tmp_path / "back", require_head=False)
    assert reloaded.spec == spec
    assert json.loads((tmp_path / "back" / "config.json").read_text())["provenance"]["seed"] == 7
    if spec.head is not None:
        with torch.no_grad():
            assert torch.equal(reloaded.fake_probability(images), model.eval().fake_probability(images))
        # the core loader reads the exported directory directly too
        direct = load_detector(tmp_path / "hf")
        assert direct.spec.head == spec.head
        assert torch.equal(direct.fake_probability(images), model.fake_probability(images))


def test_transformers_loads_the_export(tmp_path, images):
    spec = SPECS["pooled-normalised-fake-first"]
    model = random_detector(spec, seed=11).eval()
    save_detector(model, tmp_path / "det")
    export_hf(tmp_path / "det", tmp_path / "hf")
    hf, info = CLIPVisionModelWithProjection.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"]
    assert info["unexpected_keys"] == {"head.weight", "head.bias"}
    hf.eval()
    with torch.no_grad():
        out = hf(pixel_values=images)
        pooled = hf.vision_model(pixel_values=images).pooler_output
        ours_pooled = model.features(images)
        assert (pooled - ours_pooled).abs().max().item() < 1e-5
        assert (out.image_embeds - model.visual(images)).abs().max().item() < 1e-5
        # the head applied by hand on transformers' pooled output scores like our detector
        with safe_open(str(tmp_path / "hf" / "model.safetensors"), "pt") as f:
            weight, bias = f.get_tensor("head.weight"), f.get_tensor("head.bias")
        logits = F.linear(F.normalize(pooled, dim=-1), weight, bias)
        cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
        fake = cfg["detector_head"]["labels"].index("fake")
        ref = torch.softmax(logits, dim=-1)[:, fake]
    assert (model.fake_probability(images) - ref).abs().max().item() < 1e-5
    assert cfg["hidden_act"] == "quick_gelu" and cfg["layer_norm_eps"] == 1e-6
    pp = json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text())
    assert (pp["resample"], pp["do_center_crop"], pp["size"]) == (2, False, {"height": 32, "width": 32})


def test_cli_export_without_projection(tmp_path, images):
    spec = SPECS["pooled-normalised-fake-first"]
    model = random_detector(spec, seed=3).eval()
    save_detector(model, tmp_path / "det")
    runner = CliRunner()
    args = ["export", str(tmp_path / "det"), str(tmp_path / "hf"), "--to", "hf", "--no-projection"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"] == ["CLIPVisionModel"]
    hf = CLIPVisionModel.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        assert (hf(pixel_values=images).pooler_output - model.features(images)).abs().max().item() < 1e-5
    again = runner.invoke(main, args)
    assert again.exit_code == 1 and "already exists" in again.output


def test_projected_heads_without_projection_are_refused(tmp_path):
    save_detector(create_detector(SPECS["projected-one-logit"], seed=0), tmp_path / "proj")
    with pytest.raises(ConversionError, match="projected"):
        export_hf(tmp_path / "proj", tmp_path / "out", projection=False)
    assert not (tmp_path / "out").exists()
