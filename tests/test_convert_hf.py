"""Import of Hugging Face CLIP directories and GenD-style LayerNorm-tuned detectors (HF safetensors + head)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from convert_support import TINY_VISION
from safetensors.torch import save_file
from torch import nn
from transformers import CLIPConfig, CLIPForImageClassification, CLIPModel, CLIPVisionConfig, CLIPVisionModel

from mergekit_clip.convert import ConversionError, ImportOptions, import_detector
from mergekit_clip.detector.io import load_detector

VISION = TINY_VISION
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=50,
            max_position_embeddings=8)  # fmt: skip


@pytest.fixture(scope="module")
def images():
    return torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(4))


def perturb_norms(model: nn.Module) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)


def test_clip_for_image_classification(tmp_path, images):
    torch.manual_seed(0)
    vision = dict(VISION, hidden_act="gelu", layer_norm_eps=1e-6)
    config = CLIPConfig(
        vision_config=vision, text_config=TEXT, id2label={0: "Fake", 1: "Real"}, label2id={"Fake": 0, "Real": 1}
    )
    model = CLIPForImageClassification(config).eval()
    perturb_norms(model)
    model.save_pretrained(tmp_path / "src")
    report = import_detector("hf", tmp_path / "src", tmp_path / "out")
    detector = load_detector(tmp_path / "out")
    head, backbone = detector.spec.head, detector.spec.backbone
    assert (head.feature, head.labels) == ("patch_mean", ("fake", "real"))
    assert (backbone.act, backbone.layer_norm_eps) == ("gelu", 1e-6)
    with torch.no_grad():
        ref = torch.softmax(model(pixel_values=images).logits, dim=-1)[:, 0]
    assert ref.std() > 1e-4
    assert (detector.fake_probability(images) - ref).abs().max().item() < 1e-5
    assert report.dropped.get("text tower / logit scale / buffers", 0) == 0  # no text tower stored


def test_clip_model_directory_with_preprocessor(tmp_path, images):
    torch.manual_seed(1)
    model = CLIPModel(CLIPConfig(vision_config=VISION, text_config=TEXT, projection_dim=24)).eval()
    perturb_norms(model)
    model.save_pretrained(tmp_path / "src")
    pp = {
        "image_processor_type": "CLIPImageProcessor",
        "size": {"shortest_edge": 32},
        "resample": 2,
        "crop_size": {"height": 32, "width": 32},
        "do_center_crop": True,
        "image_mean": [0.5, 0.4, 0.3],
        "image_std": [0.2, 0.2, 0.2],
    }
    (tmp_path / "src" / "preprocessor_config.json").write_text(json.dumps(pp))
    report = import_detector("hf", tmp_path / "src", tmp_path / "out")
    base = load_detector(tmp_path / "out", require_head=False)
    assert base.spec.head is None and base.spec.backbone.embed_dim == 24
    assert base.spec.preprocess.interpolation == "bilinear" and base.spec.preprocess.mean == (0.5, 0.4, 0.3)
    with torch.no_grad():
        ref = model.visual_projection(model.vision_model(pixel_values=images).pooler_output)
        assert (base.visual(images) - ref).abs().max().item() < 1e-5
    assert report.dropped["text tower / logit scale / buffers"] > 0


class GenDStyle(nn.Module):
    """A LayerNorm-tuned CLIP with a linear head on the L2-normalised pooled feature, under its own prefixes."""

    def __init__(self):
        super().__init__()
        self.feature_extractor = CLIPVisionModel(CLIPVisionConfig(**VISION))
        self.linear = nn.Linear(64, 2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pooled = self.feature_extractor(pixel_values=images).pooler_output
        return self.linear(F.normalize(pooled, dim=-1))


def test_gend_style_safetensors(tmp_path, images):
    torch.manual_seed(2)
    model = GenDStyle().eval()
    perturb_norms(model)
    state = {f"model.{k}": v.contiguous() for k, v in model.state_dict().items()}
    (tmp_path / "src").mkdir()
    save_file(state, str(tmp_path / "src" / "model.safetensors"))
    (tmp_path / "src" / "config.json").write_text(json.dumps({"model_type": "gend", "backbone": "clip"}))
    CLIPVisionConfig(**VISION).save_pretrained(tmp_path / "clip")

    with pytest.raises(ConversionError, match="--hf-config"):
        import_detector("hf", tmp_path / "src", tmp_path / "out")
    options = ImportOptions(hf_config=tmp_path / "clip" / "config.json", head_normalize=True)
    report = import_detector("hf", tmp_path / "src", tmp_path / "out", options)
    detector = load_detector(tmp_path / "out")
    assert detector.spec.head.normalize and detector.spec.head.feature == "pooled"
    with torch.no_grad():
        ref = torch.softmax(model(images), dim=-1)[:, 1]
    assert ref.std() > 1e-4
    assert (detector.fake_probability(images) - ref).abs().max().item() < 1e-5
    assert any("model.linear.weight" in n for n in report.notes)
    # the single safetensors file works too
    import_detector("hf", tmp_path / "src" / "model.safetensors", tmp_path / "out2", options)
    assert (load_detector(tmp_path / "out2").fake_probability(images) - ref).abs().max().item() < 1e-5


def test_config_that_disagrees_with_weights_is_refused(tmp_path):
    torch.manual_seed(3)
    CLIPVisionModel(CLIPVisionConfig(**VISION)).save_pretrained(tmp_path / "src")
    cfg = json.loads((tmp_path / "src" / "config.json").read_text())
    cfg["num_hidden_layers"] = 3
    (tmp_path / "src" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConversionError, match="num_hidden_layers=3 vs tensors 2"):
        import_detector("hf", tmp_path / "src", tmp_path / "out")
    assert not (tmp_path / "out").exists()
