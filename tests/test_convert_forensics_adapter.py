"""Import of a released ForensicsAdapter checkpoint: a state dict written in the test with the original's names
(OUC-VAS/ForensicsAdapter's module tree: ``clip_model.*``, the re-run module's references to the tower, unused
ViT blocks, BatchNorm counters) imports into our detector, whose forward then equals the source model's."""

from __future__ import annotations

import pytest
import torch
import yaml
from click.testing import CliRunner
from fa_support import TINY_CLIP, tiny_fa_spec
from safetensors.torch import save_file

from mergekit_clip.cli import main
from mergekit_clip.convert import ConversionError, ImportOptions, convert_source
from mergekit_clip.detector.io import load_detector
from mergekit_clip.detector.model import build_detector

# what the tiny geometry's tensors cannot tell (the paper's values otherwise)
FA_FILE = {"image_size": 64, "depth": 3, "heads": 2, "fusion_map": {1: 1, 2: 3}, "rerun_from_layer": 1,
           "refine_layer": 3}  # fmt: skip
CLIP_FLAGS = ["--heads", str(TINY_CLIP.heads), "--no-quick-gelu"]
BATCH_NORMS = ("masked_xray_post_process.process.1", "masked_xray_post_process.process.4",
               "clip_post_process.first_process.1", "clip_post_process.first_process.4")  # fmt: skip


@pytest.fixture(scope="module")
def source():
    """Our tiny detector as the original would compute it: no CLIP -> adapter term, CLIP in half precision."""
    torch.manual_seed(0)
    model = build_detector(tiny_fa_spec()).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("adapter.fusions.") and ".proj.1." in name:
                p.zero_()
            if name.startswith("visual."):
                p.copy_(p.half().float())  # the released tower is float16: keep values it can hold
        for bn in BATCH_NORMS:
            module = model.get_submodule(bn)
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model


def original_state(model) -> dict[str, torch.Tensor]:
    """The state dict the original trainer would save for ``model`` (names from its public model code)."""
    state = {}
    for name, t in model.state_dict().items():
        t = t.clone()
        if name.startswith("visual."):
            rest = name[len("visual.") :]
            state[f"clip_model.visual.{rest}"] = t.half()
            state[f"rec_attn_clip.vit.{rest}"] = t.half().clone()  # RecAttnClip keeps the tower ...
            if rest.startswith("transformer.resblocks."):
                state["rec_attn_clip.resblocks." + rest[len("transformer.resblocks.") :]] = t.half().clone()
            if rest.startswith("ln_post."):
                state[f"rec_attn_clip.{rest}"] = t.half().clone()
            if rest == "proj":
                state["rec_attn_clip.proj"] = t.half().clone()  # ... and its ln_post / proj again
        elif name.startswith("adapter.fusions."):
            continue  # created inside forward in the original: never saved
        else:
            state[name] = t
    for bn in BATCH_NORMS:
        state[f"{bn}.num_batches_tracked"] = torch.tensor(1234)
    # the text tower, the ViT's unused blocks and patch embedding, the unused intra_scale
    state["clip_model.token_embedding.weight"] = torch.randn(50, 32).half()
    state["clip_model.transformer.resblocks.0.attn.in_proj_weight"] = torch.randn(96, 32).half()
    state["clip_model.ln_final.weight"] = torch.ones(32).half()
    state["clip_model.logit_scale"] = torch.tensor(4.6)
    for block in (3, 4):
        for k, v in model.state_dict().items():
            if k.startswith("adapter.vit_model.blocks.0."):
                state[k.replace(".blocks.0.", f".blocks.{block}.")] = torch.randn_like(v)
    state["adapter.vit_model.patch_embed.proj.weight"] = torch.randn(32, 3, 16, 16)
    state["adapter.vit_model.patch_embed.norm.weight"] = torch.ones(32)
    state["rec_attn_clip.intra_scale"] = torch.zeros(1)
    return state


@pytest.fixture()
def fa_file(tmp_path):
    path = tmp_path / "fa.yaml"
    path.write_text(yaml.safe_dump({"forensics_adapter": FA_FILE}))
    return path


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_import_round_trip_forward_equal(tmp_path, source, fa_file, suffix):
    ckpt = tmp_path / f"ckpt_best{suffix}"
    state = original_state(source)
    if suffix == ".pth":
        torch.save({f"module.{k}": v for k, v in state.items()}, ckpt)  # as saved under DataParallel
    else:
        save_file(state, str(ckpt))
    out = tmp_path / "fa"
    args = ["import", str(ckpt), str(out), "--from", "forensics-adapter", "--forensics-adapter", str(fa_file)]
    result = CliRunner().invoke(main, [*args, *CLIP_FLAGS])
    assert result.exit_code == 0, result.output
    assert "adapter.fusions.*" in result.output and "float16" in result.output
    assert "CLIP tensors saved twice" in result.output and "never reads" in result.output
    imported = load_detector(out)
    assert imported.spec == source.spec
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(imported(images), source(images), atol=1e-6)
        assert torch.allclose(imported.boundary_map(images), source.boundary_map(images), atol=1e-6)
    for name, tensor in source.state_dict().items():
        assert torch.equal(imported.state_dict()[name], tensor), name


def _convert(tmp_path, state, fa_file):
    ckpt = tmp_path / "ckpt.pth"
    torch.save(state, ckpt)
    options = ImportOptions(forensics_adapter=fa_file, heads=TINY_CLIP.heads, quick_gelu=False)
    return convert_source("forensics-adapter", ckpt, options)


def test_unknown_and_missing_keys_are_refused_by_name(tmp_path, source, fa_file):
    state = original_state(source)
    _convert(tmp_path, state, fa_file)  # the complete checkpoint converts
    with pytest.raises(ConversionError, match=r"not ForensicsAdapter's: \['adapter\.extra\.weight'\]"):
        _convert(tmp_path, {**state, "adapter.extra.weight": torch.zeros(1)}, fa_file)
    for gone, named in [
        ("clip_post_process.second_process.4.bias", "clip_post_process.second_process.4.bias"),
        ("adapter.vit_model.blocks.2.mlp.fc2.weight", "adapter.vit_model.blocks.2.mlp.fc2.weight"),
        ("clip_model.visual.transformer.resblocks.3.ln_2.bias", "clip_model.visual.transformer.resblocks.3.ln_2.bias"),
    ]:
        partial = {k: v for k, v in state.items() if k != gone}
        partial.pop(gone.replace("clip_model.visual.transformer.", "rec_attn_clip.vit.transformer."), None)
        partial.pop(gone.replace("clip_model.visual.transformer.", "rec_attn_clip."), None)
        with pytest.raises(ConversionError, match=f"missing from the checkpoint: \\['{named}'\\]"):
            _convert(tmp_path, partial, fa_file)
    changed = dict(state)
    changed["rec_attn_clip.proj"] = changed["rec_attn_clip.proj"] + 1
    with pytest.raises(ConversionError, match="rec_attn_clip.proj differs from clip_model.visual.proj"):
        _convert(tmp_path, changed, fa_file)


def test_never_a_pickle_and_options_checked(tmp_path, source, fa_file):
    ckpt = tmp_path / "ckpt.pth"
    torch.save({"state_dict": original_state(source), "trainer": ConversionError("an arbitrary object")}, ckpt)
    with pytest.raises(ConversionError, match=r"weights_only=True"):
        convert_source("forensics-adapter", ckpt, ImportOptions(forensics_adapter=fa_file))
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump({**FA_FILE, "width": 48}))
    with pytest.raises(ConversionError, match=r"contradicts .*width: file 48 vs tensors 32"):
        _convert(tmp_path, original_state(source), wrong)
    with pytest.raises(ValueError, match="--forensics-adapter applies to --from forensics-adapter"):
        convert_source("deepfakebench", ckpt, ImportOptions(forensics_adapter=fa_file))
