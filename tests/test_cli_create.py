"""``mergekit-clip create`` and ``mergekit-clip plugin status``."""

from __future__ import annotations

import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from mergekit_clip.cli import main
from mergekit_clip.detector.io import create_detector, detector_spec, load_detector, read_state_dict
from mergekit_clip.detector.spec import spec_from_open_clip


def test_create_bare_backbone_from_arch(tmp_path):
    result = CliRunner().invoke(main, ["create", str(tmp_path / "b"), "--arch", "ViT-B-32", "--no-head", "--seed", "3"])
    assert result.exit_code == 0, result.output
    spec = detector_spec(tmp_path / "b")
    assert spec.head is None and (spec.backbone.width, spec.backbone.patch_size) == (768, 32)
    assert "head.weight" not in read_state_dict(tmp_path / "b")


def test_create_from_pretrained_file_with_quick_gelu(tmp_path):
    spec = spec_from_open_clip("ViT-B-32", quick_gelu=True)
    source = create_detector(spec, seed=11)
    save_file({f"visual.{k}": v for k, v in source.visual.state_dict().items()}, str(tmp_path / "openai.safetensors"))
    args = ["create", str(tmp_path / "d"), "--arch", "ViT-B-32", "--quick-gelu", "--pretrained"]
    result = CliRunner().invoke(main, [*args, str(tmp_path / "openai.safetensors")])
    assert result.exit_code == 0, result.output
    loaded = load_detector(tmp_path / "d")
    assert loaded.spec.backbone.act == "quick_gelu"
    assert all(torch.equal(loaded.visual.state_dict()[k], v) for k, v in source.visual.state_dict().items())


def test_create_refuses_unknown_arch_and_existing_out(tmp_path):
    result = CliRunner().invoke(main, ["create", str(tmp_path / "x"), "--arch", "ViT-Q-1"])
    assert result.exit_code == 2 and "unknown open_clip architecture 'ViT-Q-1'" in result.output
    assert "SigLIP" not in result.output  # only plain ViT towers are suggested
    (tmp_path / "y").mkdir()
    result = CliRunner().invoke(main, ["create", str(tmp_path / "y"), "--arch", "ViT-B-32"])
    assert result.exit_code == 1 and "already exists; pass --overwrite" in result.output


def test_plugin_status_lists_architectures_and_methods():
    result = CliRunner().invoke(main, ["plugin", "status"])
    assert result.exit_code == 0, result.output
    assert "CLIPDetector" in result.output and "CLIPForImageClassification" in result.output
    from mergekit.merge_methods import registered_methods

    from mergekit_clip.plugin.methods import METHOD_MODULES

    names = {m.spec.name for m in registered_methods()}
    assert set(METHOD_MODULES) <= names and len(names) == 20 + len(METHOD_MODULES)  # mergekit 0.1.5 has 20
    assert f"merge methods: {len(names)}" in result.output
