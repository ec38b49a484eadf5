"""Import of Effort checkpoints: SVD-residual attention linears folded into plain weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from convert_support import tiny_vision_config
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel

from mergekit_clip.convert import ConversionError, ImportOptions, import_detector
from mergekit_clip.detector.io import load_detector, read_state_dict

RANK = 3


class SVDResidualLinear(nn.Module):
    """Effort's parameterisation, computed un-folded: y = x (W_main + U diag(S) V)^T + b."""

    def __init__(self, linear: nn.Linear, rank: int):
        super().__init__()
        out_dim, in_dim = linear.weight.shape
        self.weight_main = nn.Parameter(linear.weight.detach().clone())
        self.U_residual = nn.Parameter(torch.randn(out_dim, rank) * 0.2)
        self.S_residual = nn.Parameter(torch.rand(rank) + 0.5)
        self.V_residual = nn.Parameter(torch.randn(rank, in_dim) * 0.2)
        self.bias = nn.Parameter(linear.bias.detach().clone())
        self.register_buffer("weight_original_fnorm", torch.linalg.norm(linear.weight.detach()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.U_residual @ torch.diag(self.S_residual) @ self.V_residual
        return F.linear(x, self.weight_main + residual, self.bias)


class EffortDetector(nn.Module):
    def __init__(self, config: CLIPVisionConfig):
        super().__init__()
        self.backbone = CLIPVisionModel(config)
        for layer in self.backbone.encoder.layers:
            for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
                setattr(layer.self_attn, name, SVDResidualLinear(getattr(layer.self_attn, name), RANK))
        self.head = nn.Linear(config.hidden_size, 2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(pixel_values=images).pooler_output)


@pytest.fixture(scope="module")
def source():
    torch.manual_seed(0)
    return EffortDetector(tiny_vision_config()).eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(2))


def test_effort_import_matches_unfolded_forward(tmp_path, source, images):
    torch.save(source.state_dict(), tmp_path / "effort.pth")
    report = import_detector("effort", tmp_path / "effort.pth", tmp_path / "out", ImportOptions(heads=4))
    detector = load_detector(tmp_path / "out")
    with torch.no_grad():
        ref = torch.softmax(source(images), dim=-1)[:, 1]
    assert ref.std() > 1e-4
    assert (detector.fake_probability(images) - ref).abs().max().item() < 1e-5
    assert any("folded 8 SVD residual linears" in n for n in report.notes)
    assert report.dropped["SVD norm buffers"] == 8

    # The folded q rows of layer 1 equal W_main + U diag(S) V computed here in float64.
    attn = source.backbone.encoder.layers[1].self_attn
    q = attn.q_proj
    expected = (
        q.weight_main.double() + q.U_residual.double() @ torch.diag(q.S_residual.double()) @ q.V_residual.double()
    ).float()
    in_proj = read_state_dict(tmp_path / "out")["visual.transformer.resblocks.1.attn.in_proj_weight"]
    assert torch.equal(in_proj[:64], expected)


def test_residual_without_main_is_refused(tmp_path, source):
    state = source.state_dict()
    del state["backbone.encoder.layers.0.self_attn.k_proj.weight_main"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(ConversionError, match=r"layers\.0\.self_attn\.k_proj\.U_residual"):
        import_detector("effort", tmp_path / "broken.pth", tmp_path / "out", ImportOptions(heads=4))
    assert not (tmp_path / "out").exists()


def test_plain_checkpoint_is_not_effort(tmp_path):
    torch.manual_seed(1)
    config = CLIPVisionConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4, image_size=16, patch_size=8
    )
    state = {f"backbone.{k}": v for k, v in CLIPVisionModel(config).state_dict().items()}
    torch.save(state, tmp_path / "plain.pth")
    with pytest.raises(ConversionError, match="deepfakebench"):
        import_detector("effort", tmp_path / "plain.pth", tmp_path / "out")
