"""``mergekit-clip stats``: the Gram and Fisher statistics of a tiny detector on generated frames, against
independent computations, and the file they are stored in."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from merge_support import finetune_of
from methods_support import DATASET, write_tiny_dataset
from safetensors import safe_open

from mergekit_clip.cli import main
from mergekit_clip.detector.io import create_detector, load_detector, save_detector, weights_hash
from mergekit_clip.stats.collect import attention_context
from mergekit_clip.stats.store import stats_path


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture
def detector_dir(tmp_path, tiny_spec):
    model = finetune_of(create_detector(tiny_spec, seed=0), seed=1)
    return save_detector(model, tmp_path / "ft0")


def run_stats(path, kind, json_root, data_root, *extra):
    args = ["stats", str(path), "--kind", kind, "--dataset", DATASET, "--split", "train"]
    args += ["--json-root", str(json_root), "--data-root", str(data_root), *extra]
    return CliRunner().invoke(main, args)


def _images(model, data_root, count=12):
    from mergekit_clip.data.transforms import build_eval_transform, read_image

    transform = build_eval_transform(model.spec.preprocess)
    files = sorted((data_root / "frames").glob("v*/*.png"), key=lambda p: (p.parent.name, int(p.stem)))
    return torch.stack([transform(read_image(f)) for f in files[:count]])


def test_attention_context_is_what_out_proj_multiplies(tiny_spec):
    attn = create_detector(tiny_spec, seed=0).visual.transformer.resblocks[0].attn
    x = torch.randn(3, 5, tiny_spec.backbone.width)
    expected = attn(x, x, x, need_weights=False)[0]
    got = F.linear(attention_context(attn, x), attn.out_proj.weight, attn.out_proj.bias)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_gram_stats_match_inputs_captured_independently(detector_dir, tiny_data):
    json_root, data_root = tiny_data
    result = run_stats(detector_dir, "gram", json_root, data_root, "--batch-size", "5")
    assert result.exit_code == 0, result.output
    model = load_detector(detector_dir)
    captured: dict[str, list] = {}
    block = model.visual.transformer.resblocks[1]
    hooks = [
        block.ln_1.register_forward_hook(lambda m, a, out: captured.setdefault("ln_1", []).append(out)),
        block.mlp.c_proj.register_forward_hook(lambda m, a, out: captured.setdefault("c_proj", []).append(a[0])),
        model.head.register_forward_hook(lambda m, a, out: captured.setdefault("head", []).append(a[0])),
    ]
    with torch.no_grad():
        model(_images(model, data_root))
    for h in hooks:
        h.remove()
    file = stats_path(detector_dir, "gram")
    with safe_open(str(file), "pt") as f:
        meta = f.metadata()
        assert meta["kind"] == "gram" and meta["dataset"] == DATASET and meta["split"] == "train"
        assert meta["frames"] == "12" and meta["weights_sha256"] == weights_hash(detector_dir)
        names = set(f.keys())
        for key, weight in (
            ("ln_1", "visual.transformer.resblocks.1.attn.in_proj_weight"),
            ("c_proj", "visual.transformer.resblocks.1.mlp.c_proj.weight"),
            ("head", "head.weight"),
        ):
            x = captured[key][0].reshape(-1, captured[key][0].shape[-1]).double()
            torch.testing.assert_close(f.get_tensor(weight).double(), x.T @ x / len(x), atol=1e-4, rtol=1e-4)
    layers = model.spec.backbone.layers
    per_block = {"attn.in_proj_weight", "attn.out_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight"}
    expected = {f"visual.transformer.resblocks.{i}.{n}" for i in range(layers) for n in per_block} | {"head.weight"}
    assert names == expected
    assert json.loads(meta["input_axis"])["head.weight"] == 1


def test_fisher_stats_are_mean_squared_gradients_of_the_predicted_label(detector_dir, tiny_data):
    json_root, data_root = tiny_data
    result = run_stats(detector_dir, "fisher", json_root, data_root, "--max-frames", "4")
    assert result.exit_code == 0, result.output
    model = load_detector(detector_dir)
    params = dict(model.named_parameters())
    expected = {n: torch.zeros_like(p) for n, p in params.items()}
    for image in _images(model, data_root, count=4):
        probs = torch.softmax(model(image[None]), dim=-1)[0]
        log_p = torch.log(probs[int(probs.argmax())])
        grads = torch.autograd.grad(log_p, list(params.values()), allow_unused=True)
        for n, g in zip(params, grads):
            if g is not None:
                expected[n] += g**2 / 4
    with safe_open(str(stats_path(detector_dir, "fisher")), "pt") as f:
        assert f.metadata()["fisher_label"] == "predicted" and f.metadata()["frames"] == "4"
        assert set(f.keys()) == set(params)
        for n in ("visual.conv1.weight", "visual.transformer.resblocks.0.attn.in_proj_weight", "head.bias"):
            torch.testing.assert_close(f.get_tensor(n), expected[n], atol=1e-7, rtol=1e-3)


def test_stats_errors_are_one_line(detector_dir, tiny_data, tmp_path):
    json_root, data_root = tiny_data
    result = run_stats(detector_dir, "gram", json_root, data_root, "--dataset", "Nope")
    assert result.exit_code == 1 and "Error:" in result.output and "Nope" in result.output
    assert not stats_path(detector_dir, "gram").exists()
