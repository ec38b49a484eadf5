"""clip-eval's boundary figure for ForensicsAdapter detectors: the panel holds the frame, its mask, the target and
the model's boundary map (checked against a forward done here), and the report gets one figure per such model."""

from __future__ import annotations

import json

import cv2
import numpy as np
import torch
from click.testing import CliRunner
from fa_support import tiny_fa_spec

from eval.boundary import boundary_panel
from eval.cli import main
from mergekit_clip.data.formats import load_frames
from mergekit_clip.data.masks import boundary_target
from mergekit_clip.detector.io import create_detector, save_detector

SIZE = 64  # the tiny adapter's frame size: no resize, so the mask panel is the file itself


def _dataset(root):
    """``Tiny``: 2 real and 2 fake videos of 2 frames (test split); fakes have a square mask at their mask path."""
    rng = np.random.default_rng(0)
    doc: dict = {"Tiny": {}}
    for label, kind in (("CelebDFv2_real", "real"), ("CelebDFv2_fake", "fake")):
        videos = {}
        for v in range(2):
            frames = []
            for f in range(2):
                rel = f"Tiny/{kind}/frames/{v:03d}/{f}.png"
                (root / "data" / rel).parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(root / "data" / rel), rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8))
                if kind == "fake":
                    mask = np.zeros((SIZE, SIZE), np.uint8)
                    mask[16:40, 20:48] = 255
                    (root / "data" / rel.replace("/frames/", "/masks/")).parent.mkdir(parents=True, exist_ok=True)
                    cv2.imwrite(str(root / "data" / rel.replace("/frames/", "/masks/")), mask)
                frames.append(rel)
            videos[f"{v:03d}"] = {"label": label, "frames": frames}
        doc["Tiny"][label] = {"test": videos}
    (root / "json").mkdir()
    (root / "json" / "Tiny.json").write_text(json.dumps(doc))
    return root / "json", root / "data"


def test_boundary_panel_is_the_frame_its_mask_and_the_models_map(tmp_path):
    json_root, data_root = _dataset(tmp_path)
    records = load_frames("Tiny", "test", json_root=json_root, data_root=data_root)
    model = create_detector(tiny_fa_spec(), seed=0).eval()
    panel = boundary_panel(model, records, "fa", "Tiny")
    first_fake = next(r for r in records if r.label == 1)
    assert panel.frame_path == str(first_fake.path)
    rgb = cv2.cvtColor(cv2.imread(str(first_fake.path)), cv2.COLOR_BGR2RGB).astype(np.float32) / 255
    assert np.allclose(panel.frame, rgb, atol=1e-5)
    expected_mask = np.zeros((SIZE, SIZE), np.float32)
    expected_mask[16:40, 20:48] = 1.0
    assert np.array_equal(panel.mask, expected_mask)
    assert np.allclose(panel.target, boundary_target(torch.from_numpy(expected_mask)).numpy())
    mean, std = np.array(model.spec.preprocess.mean), np.array(model.spec.preprocess.std)
    x = torch.from_numpy(((rgb - mean) / std).transpose(2, 0, 1)[None]).float()
    with torch.no_grad():
        assert np.allclose(panel.boundary, model.boundary_map(x)[0].numpy(), atol=1e-5)
    assert boundary_panel(model, [r for r in records if r.label == 0], "fa", "Tiny") is None  # no fake frame
    # trained gated (the paper's default): drawn gated by the true boundary patches. The square (rows 16-39, cols
    # 20-47) on the 4x4 grid of 16-px patches: (1,1) 12 of 16 columns white, (1,2) all white (no boundary),
    # (2,1) and (2,2) 8 of 16 rows white
    gate = torch.zeros(1, 16)
    gate[0, [5, 9, 10]] = 1.0
    gated = boundary_panel(model, records, "fa", "Tiny", gated=True)
    with torch.no_grad():
        ref, ungated = model.boundary_map(x, gate)[0].numpy(), model.boundary_map(x)[0].numpy()
    # an untrained head's gated and ungated maps differ little: the panel must be far nearer the gated one
    assert gated.gated and np.abs(gated.boundary - ref).max() < np.abs(ref - ungated).max() / 20


def test_trained_gated_reads_the_provenance():
    from eval.boundary import trained_gated

    assert trained_gated({"provenance": {"mode_options": {"gate_boundary": True}}})
    assert not trained_gated({"provenance": {"mode_options": {"gate_boundary": False}}})
    assert trained_gated({"provenance": {"import": {"kind": "forensics-adapter"}}})  # the original's weights
    assert not trained_gated({"provenance": {}})


def test_eval_report_draws_one_boundary_figure_per_forensics_adapter(tmp_path):
    json_root, data_root = _dataset(tmp_path)
    model_dir = save_detector(create_detector(tiny_fa_spec(), seed=0), tmp_path / "fa det")
    out = tmp_path / "report"
    args = [model_dir, "--datasets", "Tiny", "--json-root", json_root, "--data-root", data_root, "--workers", "0"]
    result = CliRunner().invoke(main, [str(a) for a in [*args, "--out", out]], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert "boundary_fa_det.png" in report["plots"] and (out / "boundary_fa_det.png").stat().st_size > 0
