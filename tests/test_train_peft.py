"""Parameter-efficient modes on a tiny ViT: what trains, what folding keeps, parameter counts at ViT-B/16 and L/14.

Structure checks compare with independent computations: the set of changed tensors against the names the mode
should touch, ``torch.linalg.matrix_rank`` of the change of a low-rank-tuned matrix, the SVD of the base matrix,
and closed-form parameter counts of the open_clip geometry.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch.nn.utils import parametrize

from mergekit_clip.detector.io import create_detector
from mergekit_clip.detector.spec import HeadSpec, spec_from_open_clip
from train.modes import MODES, get_mode, register
from train.modes.layernorm import LayerNormOptions, alignment_loss, uniformity_loss
from train.modes.lora import LoRAOptions
from train.modes.lowrank import TARGETS
from train.modes.registry import TrainingMode
from train.modes.svd_residual import SVDResidualOptions

PEFT_MODES = ("layernorm", "lora", "svd_residual", "bitfit")
QKV = ("q_proj", "k_proj", "v_proj")


def _options(mode: str):
    return {
        "layernorm": LayerNormOptions(cosine_head=True, alignment_weight=0.5, uniformity_weight=0.5),
        "lora": LoRAOptions(rank=2, alpha=4.0, targets=("q_proj", "v_proj", "out_proj", "c_fc"), dropout=0.2),
        "svd_residual": SVDResidualOptions(rank=1, orthogonality_weight=0.1, singular_value_weight=0.01),
    }.get(mode, MODES[mode].options())


def _train_a_little(model, adaptation, steps: int = 4, seed: int = 0, checkpointing: bool = False):
    """A few AdamW steps on random images (lr large enough that every trainable tensor moves)."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(8, 3, 32, 32, generator=gen)
    labels = torch.tensor([0, 1] * 4)
    ok = torch.ones(8, dtype=torch.bool)
    model.set_grad_checkpointing(checkpointing)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        if adaptation.extra_loss is not None:
            loss = loss + adaptation.extra_loss(labels, ok)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return images


@pytest.fixture
def tiny_model(tiny_spec):
    spec = tiny_spec.model_copy(update={"head": HeadSpec(normalize=True)})
    return create_detector(spec, seed=0)


def _matrices(state: dict, block: int, target: str, width: int) -> torch.Tensor:
    prefix = f"visual.transformer.resblocks.{block}."
    if target in QKV:
        j = QKV.index(target)
        return state[prefix + "attn.in_proj_weight"][j * width : (j + 1) * width]
    if target == "out_proj":
        return state[prefix + "attn.out_proj.weight"]
    return state[prefix + f"mlp.{target}.weight"]


# ---------------------------------------------------------------- registry


def test_register_is_idempotent_and_refuses_conflicts():
    lora = MODES["lora"]
    assert register(lora) is lora  # same object: no-op
    with pytest.raises(ValueError, match=r"'lora' is already registered"):
        register(TrainingMode(name="lora", prefix="lora2", trains="x", paper="y"))
    with pytest.raises(ValueError, match=r"prefix 'ft' is already used by 'full_finetune'"):
        register(TrainingMode(name="other", prefix="ft", trains="x", paper="y"))
    with pytest.raises(ValueError, match="unknown training mode 'probing'; choices: linear_probe"):
        get_mode("probing")
    assert "other" not in MODES


@pytest.mark.parametrize("name", list(MODES))
def test_every_mode_is_complete(name):
    mode = MODES[name]
    assert mode.name == name and mode.prefix and mode.trains and mode.paper and mode.adapt is not None
    assert mode.options.model_config.get("extra") == "forbid"
    assert mode.fine_tunes or mode.probe_first  # a mode trains something


# ---------------------------------------------------------------- what each mode trains


@pytest.mark.parametrize("name", PEFT_MODES)
def test_folded_weights_score_identically_and_only_the_mode_tensors_change(name, tiny_model):
    base_state = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    model = copy.deepcopy(tiny_model)
    adaptation = MODES[name].adapt(model, _options(name), 0)
    images = _train_a_little(model, adaptation)
    with torch.no_grad():
        unfolded = model(images)
    factors = adaptation.fold(model)
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    with torch.no_grad():
        folded = model(images)
    assert torch.equal(folded, unfolded)  # the fold stores the very weight the forward pass used
    state = model.state_dict()
    assert set(state) == set(base_state)  # dense detector, same tensor names as the base
    changed = {k for k in state if not torch.equal(state[k], base_state[k])}
    assert {"head.weight", "head.bias"} <= changed
    backbone = changed - {"head.weight", "head.bias"}
    if name == "layernorm":
        assert backbone and all(any(f"{ln}." in k for ln in ("ln_pre", "ln_1", "ln_2", "ln_post")) for k in backbone)
        assert "visual.ln_post.weight" in backbone or "visual.ln_post.bias" in backbone
    elif name == "bitfit":
        assert backbone and all(k.endswith("bias") for k in backbone), backbone
    else:
        tensor_of = {"out_proj": "attn.out_proj.weight", "c_fc": "mlp.c_fc.weight", "c_proj": "mlp.c_proj.weight",
                     **dict.fromkeys(QKV, "attn.in_proj_weight")}  # fmt: skip
        touched = {f"visual.transformer.resblocks.{i}.{tensor_of[t]}" for i in range(2) for t in _options(name).targets}
        assert backbone == touched, backbone ^ touched
    assert factors and all(v.device.type == "cpu" for v in factors.values())


def test_lora_change_has_at_most_the_configured_rank(tiny_model):
    options = LoRAOptions(rank=2, alpha=4.0, targets=("q_proj", "v_proj", "out_proj", "c_fc", "c_proj"))
    base = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    model = copy.deepcopy(tiny_model)
    adaptation = MODES["lora"].adapt(model, options, 0)
    _train_a_little(model, adaptation)
    factors = adaptation.fold(model)
    state, width = model.state_dict(), tiny_model.spec.backbone.width
    for block in range(2):
        for target in TARGETS:
            delta = (_matrices(state, block, target, width) - _matrices(base, block, target, width)).double()
            if target not in options.targets:
                assert not delta.any(), (block, target)
                continue
            assert int(torch.linalg.matrix_rank(delta, rtol=1e-4)) == options.rank, (block, target)  # fp32 noise
            name = f"visual.transformer.resblocks.{block}.{'attn' if target in QKV + ('out_proj',) else 'mlp'}.{target}"
            a, b = factors[f"{name}.lora_A"], factors[f"{name}.lora_B"]
            torch.testing.assert_close(delta.float(), (options.alpha / options.rank) * b @ a, rtol=1e-4, atol=1e-6)


def test_svd_residual_starts_at_the_base_and_changes_with_rank_k(tiny_model):
    options = SVDResidualOptions(rank=1, orthogonality_weight=0.1, singular_value_weight=0.01)
    base = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    model = copy.deepcopy(tiny_model)
    adaptation = MODES["svd_residual"].adapt(model, options, 0)
    for block in range(2):  # before training: main + bottom-k residual reconstructs the pretrained matrix
        attn = model.visual.transformer.resblocks[block].attn
        expected = base[f"visual.transformer.resblocks.{block}.attn.in_proj_weight"]
        torch.testing.assert_close(attn.in_proj_weight, expected, rtol=0, atol=1e-5)
    _train_a_little(model, adaptation)
    adaptation.fold(model)
    state, width = model.state_dict(), tiny_model.spec.backbone.width
    for block in range(2):
        for target in options.targets:
            w0 = _matrices(base, block, target, width).double()
            u, s, vh = torch.linalg.svd(w0)  # independent: the frozen top r-k part of the base matrix
            keep = min(w0.shape) - options.rank
            main = (u[:, :keep] * s[:keep]) @ vh[:keep]
            tuned = _matrices(state, block, target, width).double()
            # atol: float32 SVD reconstruction noise is ~2e-6 here, the trained residual >1e-3
            assert int(torch.linalg.matrix_rank(tuned - main, atol=1e-5, rtol=0)) == options.rank, (block, target)
            assert int(torch.linalg.matrix_rank(tuned - w0, atol=1e-5, rtol=0)) <= 2 * options.rank, (block, target)
            assert (tuned - w0).abs().max() > 1e-4  # it trained
        assert torch.equal(state[f"visual.transformer.resblocks.{block}.mlp.c_fc.weight"],
                           base[f"visual.transformer.resblocks.{block}.mlp.c_fc.weight"])  # fmt: skip


def test_svd_residual_losses_are_efforts_on_a_4x3_example():
    from train.modes.lowrank import SVDResidualFactor

    # W = diag(3, 2, 1) padded to 4 x 3: U = e1, e2, e3 of R^4, V = I_3 (up to signs), r = 3; rank-1 residual, so
    # U_r = [e1 e2], Vh_r = [e1; e2] are frozen and the residual starts at u = e3, s = 1, v = e3
    w = torch.tensor([[3.0, 0, 0], [0, 2, 0], [0, 0, 1], [0, 0, 0]])
    factor = SVDResidualFactor(w, rank=1, frozen_vectors=True).requires_grad_(False)
    # at the start [U_r u] has orthonormal columns; Effort's ||C Cᵀ - I_4||_F is sqrt(4 - 3) = 1 for a tall matrix
    assert float(factor.orthogonality_loss()) == pytest.approx(0.5 * 1.0 + 0.5 * 0.0, abs=1e-6)
    assert float(factor.singular_value_loss()) == pytest.approx(0.0, abs=1e-5)
    with torch.no_grad():  # u = (0.6, 0, 0.8, 0): unit, but 0.6 of it inside the frozen e1; v = (0, 0.5, 1); s = 2
        factor.U.copy_(torch.tensor([[0.6], [0.0], [0.8], [0.0]]))
        factor.V.copy_(torch.tensor([[0.0], [0.5], [1.0]]))
        factor.S.fill_(2.0)
    # U side: CᵀC - I = [[0, 0, 0.6], [0, 0, 0], [0.6, 0, 0.36 + 0.64 - 1]]: 2 * 0.36 = 0.72, plus the floor 1
    # V side: DDᵀ - I = [[0, 0, 0], [0, 0, 0.5], [0, 0.5, 0.25 + 1 - 1]]: 2 * 0.25 + 0.25^2 = 0.5625
    expected = 0.5 * math.sqrt(0.72 + 1.0) + 0.5 * math.sqrt(0.5625)
    assert float(factor.orthogonality_loss()) == pytest.approx(expected, rel=1e-5)
    # Effort's literal form, with the 4 x 4 product, agrees
    c = torch.cat([factor.U_r.double(), factor.U.double()], dim=1)
    d = torch.cat([factor.Vh_r.double(), factor.V.double().t()], dim=0)
    literal = 0.5 * torch.linalg.norm(c @ c.t() - torch.eye(4, dtype=torch.float64)) + 0.5 * torch.linalg.norm(
        d @ d.t() - torch.eye(3, dtype=torch.float64))  # fmt: skip
    assert float(factor.orthogonality_loss()) == pytest.approx(float(literal), rel=1e-5)
    # ||Ŵ||² = 9 + 4 + s² ||u||² ||v||² = 13 + 4 * 1.25 (uᵀ main v = 0: no cross term) = 18 against ||W||² = 14
    assert float(factor.singular_value_loss()) == pytest.approx(4.0, rel=1e-5)
    with pytest.raises(RuntimeError, match="frozen_vectors"):
        SVDResidualFactor(w, rank=1).orthogonality_loss()


def test_svd_residual_extra_loss_is_the_weighted_mean_over_matrices(tiny_model):
    options = SVDResidualOptions(rank=1, orthogonality_weight=0.3, singular_value_weight=0.02)
    model = copy.deepcopy(tiny_model)
    adaptation = MODES["svd_residual"].adapt(model, options, 0)
    _train_a_little(model, adaptation, steps=2)
    factors = [m for m in model.modules() if type(m).__name__ == "SVDResidualFactor"]
    assert len(factors) == 2 * 4  # 2 blocks x q, k, v, out
    labels, ok = torch.tensor([0, 1]), torch.ones(2, dtype=torch.bool)
    with torch.no_grad():
        expected = 0.3 * np.mean([float(f.orthogonality_loss()) for f in factors]) + 0.02 * np.mean(
            [float(f.singular_value_loss()) for f in factors])  # fmt: skip
        assert float(adaptation.extra_loss(labels, ok)) == pytest.approx(expected, rel=1e-5)
        assert float(adaptation.extra_loss(labels, ok)) > 0


def test_alignment_and_uniformity_match_pairwise_sums():
    gen = torch.Generator().manual_seed(0)
    f = torch.nn.functional.normalize(torch.randn(6, 5, generator=gen, dtype=torch.float64), dim=1)
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    same = [(i, j) for i in range(6) for j in range(i + 1, 6) if y[i] == y[j]]
    align = sum(float(((f[i] - f[j]) ** 2).sum()) for i, j in same) / len(same)
    pairs = [(i, j) for i in range(6) for j in range(i + 1, 6)]
    uniform = math.log(sum(math.exp(-2 * float(((f[i] - f[j]) ** 2).sum())) for i, j in pairs) / len(pairs))
    assert float(alignment_loss(f, y)) == pytest.approx(align, rel=1e-9)
    assert float(uniformity_loss(f, 2.0)) == pytest.approx(uniform, rel=1e-9)
    assert float(alignment_loss(f[:2], y[:2])) == 0.0  # no same-label pair


def test_cosine_head_folds_into_a_linear_head_on_normalised_features(tiny_model):
    model = copy.deepcopy(tiny_model)
    adaptation = MODES["layernorm"].adapt(model, LayerNormOptions(cosine_head=True, temperature=0.05), 0)
    images = _train_a_little(model, adaptation, steps=2)
    direction = model.head.parametrizations.weight.original.detach().clone()
    factors = adaptation.fold(model)
    torch.testing.assert_close(factors["head.weight_direction"], direction)
    expected = direction / direction.norm(dim=1, keepdim=True) / 0.05
    torch.testing.assert_close(model.head.weight, expected, rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        feats = torch.nn.functional.normalize(model.features(images), dim=-1)
        torch.testing.assert_close(model(images), feats @ expected.t() + model.head.bias)


def test_layernorm_losses_need_normalised_features(tmp_path):
    from train.config import ConfigError, load_config

    cfg = {"output": str(tmp_path), "backbone": {"width": 64, "layers": 2, "heads": 4, "patch_size": 8},
           "data": {"json_root": str(tmp_path), "data_root": str(tmp_path), "train_dataset": "X"},
           "sweep": {"modes": ["layernorm"]}}  # fmt: skip
    with pytest.raises(ConfigError, match="head.normalize: true"):
        load_config(None, ["mode_options.layernorm.alignment_weight=0.1"], base=cfg)
    config = load_config(None, ["mode_options.layernorm.alignment_weight=0.1", "head.normalize=true"], base=cfg)
    assert config.options_of("layernorm").alignment_weight == 0.1
    with pytest.raises(ConfigError, match=r"unknown key 'mode_options\.lora\.rnak'.*did you mean 'rank'"):
        load_config(None, ["mode_options.lora.rnak=4"], base=cfg)
    with pytest.raises(ConfigError, match=r"mode_options\.lora\.targets\.0"):
        load_config(None, ["mode_options.lora.targets=[qkv]"], base=cfg)
    with pytest.raises(ConfigError, match="unknown key 'mode_options.bitfit'"):
        load_config(None, ["mode_options.bitfit.rank=1"], base=cfg)


# ---------------------------------------------------------------- bf16, gradient checkpointing, dropout replay


@pytest.mark.parametrize("name", PEFT_MODES)
def test_bf16_autocast_and_gradient_checkpointing(name, tiny_model):
    grads = {}
    for checkpointing in (False, True):
        model = copy.deepcopy(tiny_model)
        adaptation = MODES[name].adapt(model, _options(name), 0)
        model.set_grad_checkpointing(checkpointing)
        model.train()
        images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        labels, ok = torch.tensor([0, 1, 0, 1]), torch.ones(4, dtype=torch.bool)
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        if adaptation.extra_loss is not None:
            loss = loss + adaptation.extra_loss(labels, ok)
        loss.backward()
        grads[checkpointing] = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(images)
        assert logits.dtype == torch.bfloat16 and bool(torch.isfinite(logits.float()).all())
        bf16_loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        model.zero_grad()
        bf16_loss.backward()
        assert all(bool(torch.isfinite(p.grad).all()) for p in model.parameters() if p.requires_grad)
    assert set(grads[True]) == set(grads[False])
    for n in grads[False]:  # recomputation (LoRA dropout masks included) changes memory, not gradients
        torch.testing.assert_close(grads[True][n], grads[False][n], rtol=1e-5, atol=1e-7, msg=n)


def test_lora_dropout_mask_is_a_function_of_seed_and_step(tiny_model):
    options = LoRAOptions(rank=2, dropout=0.5, targets=("c_fc",))
    a, b = copy.deepcopy(tiny_model), copy.deepcopy(tiny_model)
    ad_a, ad_b = MODES["lora"].adapt(a, options, 3), MODES["lora"].adapt(b, options, 3)
    _train_a_little(a, ad_a, steps=3)
    _train_a_little(b, ad_b, steps=3)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    steps = [int(m.step) for m in a.modules() if hasattr(m, "lora_A")]
    assert steps == [3, 3]  # one draw per training forward, none in eval


# ---------------------------------------------------------------- parameter counts at real geometries


def _counts(arch: str, name: str, options) -> dict:
    spec = spec_from_open_clip(arch, quick_gelu=True)
    with torch.device("meta"):
        model = create_detector(spec, seed=None)
        return MODES[name].adapt(model, options, 0).provenance


@pytest.mark.parametrize(("arch", "width", "layers"), [("ViT-B-16", 768, 12), ("ViT-L-14", 1024, 24)])
def test_trainable_parameter_counts_at_real_geometries(arch, width, layers):
    head = width * 2 + 2
    effort = _counts(arch, "svd_residual", SVDResidualOptions())
    assert effort["trainable_visual_parameters"] == layers * 4 * (2 * width + 1)  # U (w x 1), S (1), V (w x 1)
    assert effort["trainable_parameters"] == effort["trainable_visual_parameters"] + head
    ln = _counts(arch, "layernorm", LayerNormOptions())
    assert ln["trainable_visual_parameters"] == (2 * layers + 2) * 2 * width
    lora = _counts(arch, "lora", LoRAOptions(rank=8))
    assert lora["trainable_visual_parameters"] == layers * 4 * 8 * (width + width)
    if arch == "ViT-L-14":
        assert 0.18e6 < effort["trainable_visual_parameters"] < 0.20e6  # Effort: ~0.19 M
        assert ln["trainable_visual_share"] == pytest.approx(0.0003, abs=0.00005)  # GenD: ~0.03 %
    full = _counts(arch, "full_finetune", MODES["full_finetune"].options())
    assert full["trainable_visual_share"] < 1.0  # visual.proj: a pooled head never reads it


@pytest.mark.parametrize("name", list(MODES))
def test_every_mode_sweeps_with_its_prefix(name, tmp_path):
    from train.config import TrainConfig

    cfg = {"output": str(tmp_path), "backbone": {"width": 64, "layers": 2, "heads": 4, "patch_size": 8},
           "data": {"json_root": str(tmp_path), "data_root": str(tmp_path), "train_dataset": "X"},
           "sweep": {"modes": [name], "seeds": [0], "lrs": [1e-4, 3e-4]}}  # fmt: skip
    plans = TrainConfig.model_validate(cfg).ingredients()
    mode = MODES[name]
    assert all(p.name.startswith(f"{mode.prefix}_") and p.mode == name for p in plans)
    assert len(plans) == (2 if mode.fine_tunes else 1)  # a mode that does not fine-tune ignores the lr axis


def test_the_example_peft_family_config_validates():
    from pathlib import Path

    import yaml

    from train.config import TrainConfig

    file = Path(__file__).parents[1] / "train" / "configs" / "tiny_peft_family.yaml"
    config = TrainConfig.model_validate(yaml.safe_load(file.read_text()))
    assert [p.name for p in config.ingredients()][:2] == ["ln_s0", "ln_s1"]
    assert config.options_of("lora").rank == 4
