"""Import of OpenAI / open_clip weights (whole CLIP, visual tower, hub directory, TorchScript) and head files."""

from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch
import torch.nn.functional as F
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from safetensors.torch import save_file

from mergekit_clip.convert import ConversionError, ImportOptions, import_detector
from mergekit_clip.detector.io import load_detector


@pytest.fixture(scope="module")
def clip() -> CLIP:
    torch.manual_seed(0)
    vision = CLIPVisionCfg(layers=2, width=64, head_width=16, patch_size=8, image_size=32)
    text = CLIPTextCfg(context_length=8, vocab_size=50, width=32, heads=2, layers=1)
    model = CLIP(embed_dim=32, vision_cfg=vision, text_cfg=text, quick_gelu=True).eval()
    with torch.no_grad():
        for name, p in model.visual.named_parameters():
            if "ln_" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.fixture(scope="module")
def images():
    return torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def pooled_reference(clip: CLIP, images: torch.Tensor) -> torch.Tensor:
    """open_clip's own tower without its projection: ln_post(CLS)."""
    visual = copy.deepcopy(clip.visual)
    visual.proj = None
    with torch.no_grad():
        return visual(images)


def test_whole_clip_with_projected_head_file(tmp_path, clip, images):
    torch.save(clip.state_dict(), tmp_path / "clip.pt")
    head = torch.nn.Linear(32, 2)
    torch.save(head.state_dict(), tmp_path / "head.pt")  # keys weight/bias; rows (fake, real)
    options = ImportOptions(heads=4, quick_gelu=True, head=tmp_path / "head.pt", labels="fake,real")
    report = import_detector("openclip", tmp_path / "clip.pt", tmp_path / "out", options)
    detector = load_detector(tmp_path / "out")
    assert detector.spec.head.feature == "projected" and detector.spec.head.labels == ("fake", "real")
    with torch.no_grad():
        ref = torch.softmax(head(clip.encode_image(images)), dim=-1)[:, 0]
    assert ref.std() > 1e-4
    assert (detector.fake_probability(images) - ref).abs().max().item() < 1e-5
    assert report.dropped["text tower / logit scale"] > 0
    assert report.mapped["projection"] == 1 and report.mapped["head"] == 2


def test_visual_tower_only_with_normalised_one_logit_head(tmp_path, clip, images):
    save_file({k: v.contiguous() for k, v in clip.visual.state_dict().items()}, str(tmp_path / "visual.safetensors"))
    head = torch.nn.Linear(64, 1)
    save_file({"fc.weight": head.weight.detach(), "fc.bias": head.bias.detach()}, str(tmp_path / "h.safetensors"))
    options = ImportOptions(
        heads=4, quick_gelu=True, head=tmp_path / "h.safetensors", head_normalize=True, labels="fake"
    )
    import_detector("openclip", tmp_path / "visual.safetensors", tmp_path / "out", options)
    detector = load_detector(tmp_path / "out")
    with torch.no_grad():
        ref = torch.sigmoid(head(F.normalize(pooled_reference(clip, images), dim=-1)))[:, 0]
    assert (detector.fake_probability(images) - ref).abs().max().item() < 1e-5


def test_bare_backbone_and_quick_gelu_matters(tmp_path, clip, images):
    torch.save(clip.state_dict(), tmp_path / "clip.pt")
    import_detector("openclip", tmp_path / "clip.pt", tmp_path / "base", ImportOptions(heads=4, quick_gelu=True))
    import_detector("openclip", tmp_path / "clip.pt", tmp_path / "gelu", ImportOptions(heads=4))
    base = load_detector(tmp_path / "base", require_head=False)
    assert base.spec.head is None
    with torch.no_grad():
        ref = clip.encode_image(images)
        assert (base.visual(images) - ref).abs().max().item() < 1e-5
        wrong = load_detector(tmp_path / "gelu", require_head=False).visual(images)
    assert (wrong - ref).abs().max().item() > 1e-4  # GELU instead of QuickGELU is a different network


def test_open_clip_hub_directory(tmp_path, clip, images):
    hub = tmp_path / "hub"
    hub.mkdir()
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(hub / "open_clip_model.safetensors"))
    cfg = {
        "model_cfg": {
            "embed_dim": 32,
            "quick_gelu": True,
            "vision_cfg": {"layers": 2, "width": 64, "head_width": 16, "patch_size": 8, "image_size": 32},
        },
        "preprocess_cfg": {
            "mean": [0.5, 0.5, 0.5],
            "std": [0.25, 0.25, 0.25],
            "interpolation": "bilinear",
            "resize_mode": "squash",
        },
    }
    (hub / "open_clip_config.json").write_text(json.dumps(cfg))
    import_detector("openclip", hub, tmp_path / "out")  # no hints: all from open_clip_config.json
    base = load_detector(tmp_path / "out", require_head=False)
    b, pre = base.spec.backbone, base.spec.preprocess
    assert (b.heads, b.act, b.embed_dim) == (4, "quick_gelu", 32)
    assert (pre.mean, pre.interpolation, pre.resize_mode, pre.image_size) == ((0.5,) * 3, "bilinear", "squash", 32)
    with torch.no_grad():
        assert (base.visual(images) - clip.encode_image(images)).abs().max().item() < 1e-5


def test_torchscript_archive_needs_trust(tmp_path, clip, images):
    with warnings.catch_warnings():  # tracing warnings are irrelevant: only the stored weights matter
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(copy.deepcopy(clip.visual), images[:1], check_trace=False)
    traced.save(str(tmp_path / "ViT-tiny.pt"))
    with pytest.raises(ConversionError, match="--trust-torchscript"):
        import_detector("openclip", tmp_path / "ViT-tiny.pt", tmp_path / "out", ImportOptions(heads=4))
    assert not (tmp_path / "out").exists()
    import_detector(
        "openclip", tmp_path / "ViT-tiny.pt", tmp_path / "out", ImportOptions(heads=4, trust_torchscript=True)
    )
    base = load_detector(tmp_path / "out", require_head=False)
    assert base.spec.backbone.act == "quick_gelu"  # OpenAI archives imply QuickGELU
    with torch.no_grad():
        assert (base.visual(images) - clip.encode_image(images)).abs().max().item() < 1e-5


def test_refusals_name_the_problem(tmp_path, clip):
    torch.save(clip.state_dict(), tmp_path / "clip.pt")
    with pytest.raises(ConversionError, match="width: --arch 768 vs tensors 64"):
        import_detector("openclip", tmp_path / "clip.pt", tmp_path / "a", ImportOptions(arch="ViT-B-16"))
    state = clip.state_dict()
    state["visual.transformer.resblocks.0.ls_1.gamma"] = torch.ones(64)  # LayerScale: not in our tower
    torch.save(state, tmp_path / "ls.pt")
    with pytest.raises(ConversionError, match="ls_1.gamma"):
        import_detector("openclip", tmp_path / "ls.pt", tmp_path / "b", ImportOptions(heads=4))
    torch.save({"weight": torch.zeros(3, 32), "bias": torch.zeros(3)}, tmp_path / "head3.pt")
    with pytest.raises(ConversionError, match="no linear head"):
        import_detector(
            "openclip", tmp_path / "clip.pt", tmp_path / "c", ImportOptions(heads=4, head=tmp_path / "head3.pt")
        )
    assert not any((tmp_path / n).exists() for n in "abc")
