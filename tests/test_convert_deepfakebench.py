"""Import of DeepfakeBench ``clip`` detector checkpoints, checked against that layout's own forward pass."""

from __future__ import annotations

import argparse
import hashlib

import pytest
import torch
from click.testing import CliRunner
from convert_support import tiny_vision_config
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel

from mergekit_clip.cli import main
from mergekit_clip.convert import ConversionError, ImportOptions, import_detector
from mergekit_clip.detector.io import load_detector, load_provenance


class DFBClipDetector(nn.Module):
    """The DeepfakeBench ``clip`` detector layout: HF vision tower, pooled output, Linear(width, 2)."""

    def __init__(self, config: CLIPVisionConfig):
        super().__init__()
        self.backbone = CLIPVisionModel(config)
        self.head = nn.Linear(config.hidden_size, 2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(pixel_values=images).pooler_output)


def random_source(config: CLIPVisionConfig, seed: int = 0) -> DFBClipDetector:
    torch.manual_seed(seed)
    model = DFBClipDetector(config).eval()
    with torch.no_grad():  # non-trivial LayerNorms and biases, so every tensor matters
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return model


def reference_fake_probability(model: DFBClipDetector, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.softmax(model(images), dim=-1)[:, 1]


@pytest.fixture(scope="module")
def images():
    return torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(
    ("act", "eps", "prefix", "wrap"),
    [
        ("quick_gelu", 1e-5, "", None),  # DeepfakeBench default: OpenAI CLIP tower
        ("gelu", 1e-6, "module.", "state_dict"),  # DataParallel keys inside a training checkpoint
    ],
)
def test_import_matches_reference(tmp_path, images, act, eps, prefix, wrap):
    config = tiny_vision_config(act, eps)
    source = random_source(config)
    state = {prefix + k: v for k, v in source.state_dict().items()}
    ckpt = tmp_path / "ckpt_best.pth"
    torch.save({wrap: state, "epoch": 3} if wrap else state, ckpt)
    config.save_pretrained(tmp_path / "clip_cfg")

    report = import_detector("deepfakebench", ckpt, tmp_path / "out", ImportOptions(hf_config=tmp_path / "clip_cfg"))
    detector = load_detector(tmp_path / "out")
    spec = detector.spec
    assert (spec.backbone.act, spec.backbone.layer_norm_eps, spec.backbone.heads) == (act, eps, 4)
    assert spec.head.feature == "pooled" and spec.head.labels == ("real", "fake")
    ours = detector.fake_probability(images)
    ref = reference_fake_probability(source, images)
    assert ref.std() > 1e-4  # the comparison would be vacuous on a constant output
    assert (ours - ref).abs().max().item() < 1e-5
    assert report.mapped["attention"] == 8 and report.mapped["head"] == 2
    assert load_provenance(tmp_path / "out")["import"]["kind"] == "deepfakebench"
    # the head rows are stored exactly as trained
    assert torch.equal(detector.head.weight, source.head.weight)


def test_vision_model_prefix_and_wrong_activation_differs(tmp_path, images):
    """transformers-4 keys (``backbone.vision_model.*``); and the activation hint is not a no-op."""
    config = tiny_vision_config("quick_gelu")
    source = random_source(config, seed=3)
    state = {k.replace("backbone.", "backbone.vision_model."): v for k, v in source.state_dict().items()}
    torch.save(state, tmp_path / "c.pth")
    import_detector("deepfakebench", tmp_path / "c.pth", tmp_path / "ok", ImportOptions(heads=4))
    import_detector("deepfakebench", tmp_path / "c.pth", tmp_path / "bad", ImportOptions(heads=4, quick_gelu=False))
    ref = reference_fake_probability(source, images)
    assert (load_detector(tmp_path / "ok").fake_probability(images) - ref).abs().max().item() < 1e-5
    assert (load_detector(tmp_path / "bad").fake_probability(images) - ref).abs().max().item() > 1e-5


def test_unknown_tensor_is_refused_by_name_and_nothing_is_written(tmp_path):
    state = random_source(tiny_vision_config()).state_dict()
    state["backbone.encoder.layers.0.self_attn.lora_A.weight"] = torch.zeros(4, 64)
    torch.save(state, tmp_path / "c.pth")
    with pytest.raises(ConversionError, match="lora_A"):
        import_detector("deepfakebench", tmp_path / "c.pth", tmp_path / "out", ImportOptions(heads=4))
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["c.pth"]  # no temporary leftovers


def test_pickled_objects_are_refused(tmp_path):
    torch.save({"cfg": argparse.Namespace(lr=1), "w": torch.zeros(1)}, tmp_path / "evil.pth")
    with pytest.raises(ConversionError, match="weights_only"):
        import_detector("deepfakebench", tmp_path / "evil.pth", tmp_path / "out")


def test_cli(tmp_path, images):
    source = random_source(tiny_vision_config(), seed=5)
    torch.save(source.state_dict(), tmp_path / "c.pth")
    runner = CliRunner()
    args = ["import", str(tmp_path / "c.pth"), str(tmp_path / "out"), "--from", "deepfakebench", "--heads", "4"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "mapped: attention 8" in result.output and "head 2" in result.output
    ref = reference_fake_probability(source, images)
    assert (load_detector(tmp_path / "out").fake_probability(images) - ref).abs().max().item() < 1e-5
    again = runner.invoke(main, args)
    assert again.exit_code == 1 and "already exists" in again.output
    assert runner.invoke(main, [*args, "--overwrite"]).exit_code == 0
    bad = runner.invoke(main, [*args[:-2], "--heads", "5", "--overwrite"])
    assert bad.exit_code == 1 and "not divisible" in bad.output


def test_provenance_hash_and_misplaced_options(tmp_path):
    torch.save(random_source(tiny_vision_config(), seed=6).state_dict(), tmp_path / "c.pth")
    import_detector("deepfakebench", tmp_path / "c.pth", tmp_path / "out", ImportOptions(heads=4))
    expected = hashlib.sha256((tmp_path / "c.pth").read_bytes()).hexdigest()
    assert load_provenance(tmp_path / "out")["import"]["sha256"] == expected
    with pytest.raises(ValueError, match="--head applies to --from openclip"):
        import_detector("deepfakebench", tmp_path / "c.pth", tmp_path / "o2", ImportOptions(head=tmp_path / "c.pth"))
