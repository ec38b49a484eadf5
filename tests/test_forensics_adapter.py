"""ForensicsAdapter detector: the forward against a reference written here from the paper's description (plain
tensor algebra on the state dict), the config section's validation, and save/load/export round trips."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from fa_support import TINY_CLIP, TINY_FA, tiny_fa_spec

from mergekit_clip.detector.io import create_detector, load_detector, read_state_dict, save_detector
from mergekit_clip.detector.spec import DetectorConfig, DetectorSpec, ForensicsAdapterSpec

# ---------------------------------------------------------------- reference forward (independent of the model code)


def _ln(x, sd, key, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * sd[f"{key}.weight"] + sd[f"{key}.bias"]


def _gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def _attention(x, w_qkv, b_qkv, w_out, b_out, heads, mask=None):
    n, t, d = x.shape
    q, k, v = (x @ w_qkv.T + b_qkv).split(d, dim=-1)
    q, k, v = (z.reshape(n, t, heads, d // heads).transpose(1, 2) for z in (q, k, v))
    scores = q @ k.transpose(-1, -2) / math.sqrt(d // heads)
    if mask is not None:
        scores = scores + mask.reshape(n, heads, t, t)
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, t, d)
    return out @ w_out.T + b_out


def _clip_block(x, sd, i, heads, mask=None):
    p = f"visual.transformer.resblocks.{i}."
    h = _ln(x, sd, p + "ln_1", 1e-5)
    x = x + _attention(
        h,
        sd[p + "attn.in_proj_weight"],
        sd[p + "attn.in_proj_bias"],
        sd[p + "attn.out_proj.weight"],
        sd[p + "attn.out_proj.bias"],
        heads,
        mask,
    )
    h = _ln(x, sd, p + "ln_2", 1e-5)
    return (
        x
        + _gelu(h @ sd[p + "mlp.c_fc.weight"].T + sd[p + "mlp.c_fc.bias"]) @ sd[p + "mlp.c_proj.weight"].T
        + sd[p + "mlp.c_proj.bias"]
    )


def _adapter_block(x, sd, i, heads):
    p = f"adapter.vit_model.blocks.{i}."
    h = _ln(x, sd, p + "norm1", 1e-6)
    x = x + _attention(
        h,
        sd[p + "attn.qkv.weight"],
        sd[p + "attn.qkv.bias"],
        sd[p + "attn.proj.weight"],
        sd[p + "attn.proj.bias"],
        heads,
    )
    h = _ln(x, sd, p + "norm2", 1e-6)
    return (
        x
        + _gelu(h @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"]) @ sd[p + "mlp.fc2.weight"].T
        + sd[p + "mlp.fc2.bias"]
    )


def _mlp(x, sd, key, layers, conv):
    for j in range(layers):
        w, b = sd[f"{key}.layers.{j}.weight"], sd[f"{key}.layers.{j}.bias"]
        if conv:  # 1x1 conv on (N, C, H, W) = a linear map over channels
            x = torch.einsum("oc,nchw->nohw", w[:, :, 0, 0], x) + b[None, :, None, None]
        else:
            x = x @ w.T + b
        if j < layers - 1:
            x = x.clamp_min(0)
    return x


def _bn(x, sd, key):  # eval-mode BatchNorm over dim 1
    shape = (1, -1) + (1,) * (x.dim() - 2)
    mean, var = sd[f"{key}.running_mean"].reshape(shape), sd[f"{key}.running_var"].reshape(shape)
    return (x - mean) / torch.sqrt(var + 1e-5) * sd[f"{key}.weight"].reshape(shape) + sd[f"{key}.bias"].reshape(shape)


def reference_forward(sd, spec: DetectorSpec, frames, gate=None):
    """Logits and boundary map of a ForensicsAdapter, written from the description in the issue/paper."""
    b, fa = spec.backbone, spec.forensics_adapter
    n = frames.shape[0]
    q = fa.num_queries
    # frozen CLIP on the frame resized to CLIP's input size
    clip_in = F.interpolate(frames, size=(b.image_size, b.image_size), mode="bilinear", align_corners=False)
    patches = F.conv2d(clip_in, sd["visual.conv1.weight"], stride=b.patch_size).flatten(2).transpose(1, 2)
    tokens = torch.cat([sd["visual.class_embedding"].expand(n, 1, -1), patches], 1) + sd["visual.positional_embedding"]
    tokens = _ln(tokens, sd, "visual.ln_pre", 1e-5)
    clip_layers = [tokens]
    for i in range(b.layers):
        clip_layers.append(_clip_block(clip_layers[-1], sd, i, b.heads))
    grid = fa.image_size // fa.patch_size
    clip_grid = b.image_size // b.patch_size
    # adapter: queries + patch tokens, positions re-added after every block, CLIP fused after the mapped blocks
    x = F.conv2d(frames, sd["adapter.patch_conv.weight"], sd["adapter.patch_conv.bias"], stride=fa.patch_size)
    x = x.flatten(2).transpose(1, 2)
    pos = sd["adapter.vit_model.pos_embed"].transpose(1, 2).reshape(1, fa.width, fa.pos_grid, fa.pos_grid)
    pos = F.interpolate(pos, size=(grid, grid), mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)
    pos = torch.cat([sd["adapter.query_pos_embed"], pos], 1)
    x = _ln(torch.cat([sd["adapter.query_embed"].expand(n, -1, -1), x], 1) + pos, sd, "adapter.ln_pre", 1e-5)
    for i in range(fa.depth):
        x = _adapter_block(x, sd, i, fa.heads)
        if i + 1 in fa.fusion_map:
            c = clip_layers[fa.fusion_map[i + 1]][:, 1:].transpose(1, 2).reshape(n, b.width, clip_grid, clip_grid)
            key = f"adapter.fusions.{i + 1}.proj"
            c = c.permute(0, 2, 3, 1)
            mu, var = c.mean(-1, keepdim=True), c.var(-1, unbiased=False, keepdim=True)
            c = ((c - mu) / torch.sqrt(var + 1e-6) * sd[f"{key}.0.weight"] + sd[f"{key}.0.bias"]).permute(0, 3, 1, 2)
            c = torch.einsum("oc,nchw->nohw", sd[f"{key}.1.weight"][:, :, 0, 0], c) + sd[f"{key}.1.bias"][:, None, None]
            x = x.clone()
            x[:, q:] = x[:, q:] + fa.fusion_weight * c.flatten(2).transpose(1, 2)
        if i + 1 < fa.depth:
            x = x + pos
    # mask decoder
    query, pmap = x[:, :q], x[:, q:].transpose(1, 2).reshape(n, fa.width, grid, grid)
    dec = "adapter.mask_decoder"
    qe = _mlp(query, sd, f"{dec}.query_mlp", fa.mlp_layers, conv=False)
    xray = _mlp(pmap, sd, f"{dec}.xray_mlp", fa.mlp_layers, conv=True)
    attn = _mlp(pmap, sd, f"{dec}.attn_mlp", fa.mlp_layers, conv=True).reshape(n, b.heads, fa.mlp_out_dim, -1)
    maps = torch.einsum("nqd,ndl->nql", qe, xray.flatten(2))
    bias = torch.einsum("nqd,nhdl->nhql", qe, attn) * sd[f"{dec}.bias_scaling.weight"][0, 0]
    bias = bias + sd[f"{dec}.bias_scaling.bias"][0]
    # CLIP re-run: [q x CLS, CLS, patches] from layer rerun_from_layer, queries steered by the biases
    start = clip_layers[fa.rerun_from_layer]
    length = start.shape[1] - 1
    t = q + 1 + length
    mask = torch.zeros(n, b.heads, t, t)
    mask[..., :, :q] = -100.0  # nobody sees a query ...
    for j in range(q):
        mask[..., j, j] = 0.0  # ... except the query itself
    mask[..., :q, q] = -100.0  # queries do not see the CLS
    mask[..., :q, q + 1 :] = bias
    x = torch.cat([start[:, :1].expand(n, q, -1), start], 1)
    for i in range(fa.rerun_from_layer, b.layers):
        x = _clip_block(x, sd, i, b.heads, mask)
        if i + 1 == fa.refine_layer:
            key = "rec_attn_clip.clip_intra_blocks.0"
            hidden = (x[:, q + 1 :] @ sd[f"{key}.conv_first.weight"][:, :, 0].T + sd[f"{key}.conv_first.bias"]).relu()
            refined = hidden @ sd[f"{key}.conv_second.weight"][:, :, 0].T + sd[f"{key}.conv_second.bias"]
            x = torch.cat([x[:, : q + 1], x[:, q + 1 :] + fa.refine_weight * refined], 1)
    feats = _ln(x[:, :q], sd, "visual.ln_post", 1e-5) @ sd["visual.proj"]
    feats = feats / feats.norm(dim=-1, keepdim=True)
    # head: conv1d over the queries (kernel 3, padding 1) + BN + ReLU twice, conv to one row, then the MLP
    h = feats
    for conv, bn in ((0, 1), (3, 4), (6, None)):
        h = F.conv1d(
            h,
            sd[f"clip_post_process.first_process.{conv}.weight"],
            sd[f"clip_post_process.first_process.{conv}.bias"],
            padding=1,
        )
        if bn is not None:
            h = _bn(h, sd, f"clip_post_process.first_process.{bn}").clamp_min(0)
    h = h[:, 0]
    for j in (0, 2, 4):
        h = h @ sd[f"clip_post_process.second_process.{j}.weight"].T + sd[f"clip_post_process.second_process.{j}.bias"]
        if j < 4:
            h = h.clamp_min(0)
    # boundary map: convs + BN on the per-query maps, transposed conv back to the frame size
    m = maps.reshape(n, q, grid, grid)
    if gate is not None:  # zero the per-query maps outside the given patches
        m = m * gate.reshape(n, 1, grid, grid)
    key = "masked_xray_post_process.process"
    m = _bn(F.conv2d(m, sd[f"{key}.0.weight"], sd[f"{key}.0.bias"], padding=1), sd, f"{key}.1").clamp_min(0)
    m = _bn(F.conv2d(m, sd[f"{key}.3.weight"], sd[f"{key}.3.bias"], padding=1), sd, f"{key}.4").clamp_min(0)
    m = F.conv2d(m, sd[f"{key}.6.weight"], sd[f"{key}.6.bias"])
    m = F.conv_transpose2d(m, sd[f"{key}.7.weight"], sd[f"{key}.7.bias"], stride=fa.patch_size)
    return h, m, feats


def _random_detector(spec, seed=0):
    model = create_detector(spec, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # non-trivial BatchNorm statistics and visible fusion/refinement/bias paths
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(torch.randn(buf.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                buf.copy_(torch.rand(buf.shape, generator=g) + 0.5)
        for name, p in model.named_parameters():
            if name.startswith(("adapter.fusions", "rec_attn_clip", "adapter.mask_decoder.bias_scaling")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def tiny_model():
    return _random_detector(tiny_fa_spec())


@pytest.fixture(scope="module")
def frames():
    return torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(7))


def test_forward_matches_reference(tiny_model, frames):
    out = tiny_model.forward_outputs(frames)
    ref_logits, ref_boundary, ref_feats = reference_forward(tiny_model.state_dict(), tiny_model.spec, frames)
    assert out.logits.shape == (3, 2) and out.boundary.shape == (3, 1, 64, 64)
    torch.testing.assert_close(out.logits, ref_logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.boundary, ref_boundary, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.query_features, ref_feats, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(tiny_model.boundary_map(frames), ref_boundary[:, 0], rtol=1e-4, atol=1e-5)
    gate = (torch.rand(3, 16, generator=torch.Generator().manual_seed(5)) > 0.5).long()
    _, gated, _ = reference_forward(tiny_model.state_dict(), tiny_model.spec, frames, gate)
    torch.testing.assert_close(tiny_model.boundary_map(frames, gate), gated[:, 0], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(gated, ref_boundary)


@pytest.mark.parametrize("prefix", ["adapter.fusions.2.", "adapter.mask_decoder.attn_mlp.", "rec_attn_clip."])
def test_each_interaction_changes_the_output(tiny_model, frames, prefix):
    """CLIP -> adapter (fusion), adapter -> CLIP (attention biases) and the refinement all reach the query
    features the head reads (the reference would not see a path it leaves out)."""
    sd = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    *_, base = reference_forward(sd, tiny_model.spec, frames)
    for k in sd:
        if k.startswith(prefix) and k.endswith("weight"):
            sd[k] = sd[k] * 3.0
    *_, changed = reference_forward(sd, tiny_model.spec, frames)
    assert (changed - base).abs().max() > 1e-5  # float noise here is ~1e-7; fusion enters x0.01


def test_clip_tower_is_frozen_and_the_rest_trains(tiny_model):
    trainable = {n for n, p in tiny_model.named_parameters() if p.requires_grad}
    assert trainable and not any(n.startswith("visual.") for n in trainable)
    assert all(not p.requires_grad for p in tiny_model.visual.parameters())
    assert not any(k.endswith("num_batches_tracked") for k in tiny_model.state_dict())


def test_config_section_round_trips_and_validates():
    spec = tiny_fa_spec()
    cfg = DetectorConfig.from_dict(DetectorConfig.from_spec(spec).to_dict())
    assert cfg.spec == spec and cfg.spec.forensics_adapter.fusion_map == {1: 1, 2: 3}
    with pytest.raises(ValueError, match="bias_heads 3 differs from the CLIP tower's heads 4"):
        tiny_fa_spec(bias_heads=3)
    with pytest.raises(ValueError, match=r"fusion_map CLIP layers \[9\] are outside 0..layers \(4\)"):
        tiny_fa_spec(fusion_map={1: 9})
    with pytest.raises(ValueError, match=r"fusion_map adapter blocks \[5\] are outside 1..depth \(3\)"):
        ForensicsAdapterSpec(depth=3, fusion_map={5: 1})
    with pytest.raises(ValueError, match="refine_layer 6 is beyond the CLIP tower's 4 layers"):
        tiny_fa_spec(refine_layer=6)
    with pytest.raises(ValueError, match="extra"):
        ForensicsAdapterSpec(widht=3)
    dumped = DetectorConfig.from_spec(spec).to_dict()
    dumped["forensics_adapter"]["num_queries"] = 6
    with pytest.raises(ValueError, match="forensics_adapter: .*num_queries 6 is not a multiple of 4"):
        _ = DetectorConfig.from_dict(dumped).spec
    with pytest.raises(ValueError, match="forensics_adapter needs head"):
        DetectorSpec(backbone=TINY_CLIP, forensics_adapter=TINY_FA)


def test_save_load_and_hf_export_round_trip(tmp_path, tiny_model, frames):
    from mergekit_clip.convert import export_hf, import_detector
    from mergekit_clip.detector.io import detector_spec

    save_detector(tiny_model, tmp_path / "fa")
    loaded = load_detector(tmp_path / "fa")
    torch.testing.assert_close(loaded(frames), tiny_model(frames), rtol=0, atol=0)
    export_hf(tmp_path / "fa", tmp_path / "hf")
    back = load_detector(tmp_path / "hf")
    assert back.spec == tiny_model.spec
    torch.testing.assert_close(back(frames), tiny_model(frames), rtol=0, atol=0)
    hf = read_state_dict(tmp_path / "hf")
    assert "adapter.mask_decoder.bias_scaling.weight" in hf and "vision_model.pre_layrnorm.weight" in hf
    import_detector("hf", tmp_path / "hf", tmp_path / "back")  # `mergekit-clip import --from hf`
    assert detector_spec(tmp_path / "back") == tiny_model.spec
    ours, back = read_state_dict(tmp_path / "fa"), read_state_dict(tmp_path / "back")
    assert set(ours) == set(back) and all(torch.equal(ours[k], back[k]) for k in ours)


def test_clip_eval_scores_it_in_fp32_and_bf16(tmp_path, tiny_model):
    """The eval predictor scores a ForensicsAdapter as P(fake) = softmax(logits)[:, 1] of the forward on the
    frame at the adapter's size (64 px here; frames on disk are 48 px, so the resize path runs too)."""
    import numpy as np
    from test_eval_support import make_dataset

    from eval.predict import Predictor
    from mergekit_clip.data.deepfakebench import load_frames

    json_root, data_root = make_dataset(tmp_path / "ds", videos=2, frames=2, size=(48, 48))
    records = load_frames("Celeb-DF-v2", "test", json_root=json_root, data_root=data_root)
    save_detector(tiny_model, tmp_path / "fa")
    fp32 = Predictor(num_workers=0, progress=False).predict(load_detector(tmp_path / "fa"), records, "fa", "c")
    import cv2

    pre = tiny_model.spec.preprocess  # shortest-side resize to 64 (bicubic), centre crop: the whole 48 px frame
    images = [cv2.cvtColor(cv2.imread(str(r.path)), cv2.COLOR_BGR2RGB) for r in records]
    x = np.stack([cv2.resize(im, (64, 64), interpolation=cv2.INTER_CUBIC) for im in images]).astype(np.float32)
    x = (x / 255 - np.array(pre.mean)) / np.array(pre.std)
    with torch.no_grad():
        expected = torch.softmax(tiny_model(torch.from_numpy(x.transpose(0, 3, 1, 2)).float()), -1)[:, 1].numpy()
    np.testing.assert_allclose(fp32.scores, expected, rtol=1e-4, atol=1e-5)
    bf16 = Predictor(num_workers=0, progress=False, bf16=True).predict(
        load_detector(tmp_path / "fa"), records, "fa", "c"
    )
    assert np.abs(bf16.scores - fp32.scores).max() < 0.05 and np.isfinite(bf16.scores).all()
