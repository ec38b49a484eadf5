"""Cache entries verify what they reuse: a score file, a candidate model, a statistics file or a features file that
no longer matches the digest recorded when it was written is rebuilt with one warning naming it (or refused with
``clip-study run --no-rebuild``), never reused. A study refusing its input leaves no output folder."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from study_support import make_dataset, make_family

from mergekit_clip.integrity import digest_path, recorded_digest, save_verified
from study.cli import main as study_cli


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_spec):
    root = tmp_path_factory.mktemp("integrity")
    rows = (("ft_a", "full_finetune", 1e-3, 0), ("ft_b", "full_finetune", 1e-3, 1))
    make_family(root / "family", tiny_spec, rows=rows)
    for i, name in enumerate(["Tiny-FF", "Tiny-A"]):
        make_dataset(root / "json", root / "data", name, videos=3, frames=2, seed=i)
    return root


def study_file(world: Path, out: Path, **changes) -> Path:
    raw = {
        "name": "tiny", "output": str(out),
        "data": {"json_root": str(world / "json"), "data_root": str(world / "data"), "source": "Tiny-FF",
                 "test": ["Tiny-A"]},
        "families": {"tiny": {"path": str(world / "family")}},
        "merges": {"linear": {}},
        "eval": {"batch_size": 16, "workers": 0},
        "bootstrap": {"n_boot": 20},
    }  # fmt: skip
    raw.update(changes)
    file = out.parent / f"{out.name}.yml"
    file.write_text(yaml.safe_dump(raw))
    return file


def run(file: Path, *args: str):
    """``clip-study run``, down the ordinary path: the finished-study fast path (same inputs, intact outputs:
    nothing opened) is set aside by dropping its record, as a widened grid would."""
    out = Path(yaml.safe_load(file.read_text())["output"])
    (out / "cache" / "outputs.json").unlink(missing_ok=True)
    return CliRunner().invoke(study_cli, ["run", str(file), "--quiet", *args])


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("Error:")]


@pytest.fixture(scope="module")
def finished(world, tmp_path_factory):
    """A finished study, copied fresh for each test that damages it."""
    out = tmp_path_factory.mktemp("finished") / "out"
    file = study_file(world, out)
    result = run(file)
    assert result.exit_code == 0, result.output
    return file, out


@pytest.fixture()
def study(finished, tmp_path):
    file, out = finished
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    new_file = tmp_path / "out.yml"
    new_file.write_text(file.read_text().replace(str(out), str(copy)))
    return new_file, copy


def test_every_written_entry_carries_its_digest(study):
    _, out = study
    entries = [*(out / "scores").rglob("*.npz")]
    assert entries
    for entry in entries:  # the digest is sha256 of the bytes, worked out here independently
        assert recorded_digest(entry) == hashlib.sha256(entry.read_bytes()).hexdigest()
        assert digest_path(entry).read_text() == f"{recorded_digest(entry)}  {entry.name}\n"  # sha256sum -c format
    record = json.loads(next((out / "candidates" / "linear").glob("*/candidate.json")).read_text())
    assert len(record["model_sha256"]) == 64


def _rewrite_scores(file: Path) -> None:
    """The same key, other valid scores: what corruption, a stray script or a half-synced copy leaves."""
    with np.load(file) as z:
        data = dict(z)
    data["scores"] = 1.0 - data["scores"]
    with open(file, "wb") as f:
        np.savez(f, **data)


def test_a_rewritten_score_file_is_rebuilt_with_one_warning(study):
    file, out = study
    before = json.loads((out / "study.json").read_text())["models"]
    target = sorted((out / "scores").rglob("*.npz"))[0]
    _rewrite_scores(target)
    result = run(file)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("Warning:")]
    assert len(warnings) == 1 and str(target) in warnings[0] and "digest" in warnings[0]
    after = json.loads((out / "study.json").read_text())["models"]
    assert {n: m["test"] for n, m in after.items()} == {n: m["test"] for n, m in before.items()}
    assert recorded_digest(target) == hashlib.sha256(target.read_bytes()).hexdigest()


@pytest.mark.parametrize("damage", ["rewritten", "truncated", "digest removed"])
def test_no_rebuild_refuses_a_damaged_score_file(study, damage):
    file, out = study
    target = sorted((out / "scores").rglob("*.npz"))[-1]
    if damage == "rewritten":
        _rewrite_scores(target)
    elif damage == "truncated":
        target.write_bytes(target.read_bytes()[:40])
    else:
        digest_path(target).unlink()
    kept = target.read_bytes()
    result = run(file, "--no-rebuild")
    assert result.exit_code == 1 and "Traceback" not in result.output
    [line] = error_lines(result.output)
    assert str(target) in line and "--no-rebuild" in line
    assert target.read_bytes() == kept  # refused, not touched


def test_a_rewritten_candidate_model_is_merged_again(study):
    from safetensors.torch import load_file, save_file

    file, out = study
    model = next((out / "candidates" / "linear").glob("*/model"))
    weights = model / "model.safetensors"
    original = load_file(str(weights))
    tampered = {k: v + 1.0 if k == "head.weight" else v for k, v in original.items()}
    save_file(tampered, str(weights), metadata={"format": "pt"})
    result = run(file)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("Warning:")]
    assert any(str(model) in w and "candidate model" in w for w in warnings), result.output
    torch.testing.assert_close(load_file(str(weights))["head.weight"], original["head.weight"])
    # and refused with --no-rebuild
    save_file(tampered, str(weights), metadata={"format": "pt"})
    result = run(file, "--no-rebuild")
    assert result.exit_code == 1
    [line] = error_lines(result.output)
    assert str(model) in line


def test_a_damaged_statistics_file_is_refused_by_the_merge(world, tmp_path):
    from mergekit_clip.detector.io import weights_hash
    from mergekit_clip.stats.store import StatsError, clear_cache, open_stats, stats_path, write_stats

    ingredient = tmp_path / "ft_a"
    shutil.copytree(world / "family" / "ingredients" / "ft_a", ingredient)
    path = write_stats(ingredient, "gram", {"w": torch.eye(3)}, {"weights_sha256": weights_hash(ingredient)})
    assert recorded_digest(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    clear_cache()
    assert open_stats(ingredient, "gram", "regmean").get("w").shape == (3, 3)
    clear_cache()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # one flipped bit in a tensor: still a valid safetensors file
    path.write_bytes(bytes(data))
    with pytest.raises(StatsError, match="does not match its recorded digest") as info:
        open_stats(ingredient, "gram", "regmean")
    assert str(stats_path(ingredient, "gram")) in str(info.value)
    clear_cache()
    path.write_bytes(bytes(data[:100]))
    digest_path(path).unlink()  # a truncated file without a digest: named, not a SafetensorError
    with pytest.raises(StatsError, match="not a readable safetensors file") as info:
        open_stats(ingredient, "gram", "regmean")
    assert str(path) in str(info.value)
    clear_cache()


def test_a_tampered_features_entry_is_recomputed(tmp_path, capsys):
    from safetensors.torch import save_file

    from train.features import _read_entry

    entry = tmp_path / "key.safetensors"
    tensors = {"features": torch.ones(4, 2), "labels": torch.zeros(4, dtype=torch.long), "ok": torch.ones(4)}
    save_verified(lambda tmp: save_file(tensors, str(tmp)), entry)
    assert _read_entry(entry, 4)["features"].sum() == 8
    save_file({**tensors, "features": torch.zeros(4, 2)}, str(entry))  # valid, other values
    assert _read_entry(entry, 4) is None
    err = capsys.readouterr().err
    assert err.count("Warning:") == 1 and str(entry) in err
    assert not entry.exists() and not digest_path(entry).exists()


def test_refused_study_leaves_no_output_folder(world, tmp_path):
    # a recipe parameter typo (with its did-you-mean)
    out = tmp_path / "typo"
    result = run(study_file(world, out, merges={"ties": {"grid": {"densty": [0.5]}}}))
    assert result.exit_code == 1
    [line] = error_lines(result.output)
    assert "'densty'" in line and "did you mean 'density'" in line
    assert not out.exists()
    # a family whose summary lists a missing ingredient
    family = tmp_path / "family"
    shutil.copytree(world / "family", family)
    shutil.rmtree(family / "ingredients" / "ft_b")
    out = tmp_path / "missing"
    result = run(study_file(world, out, families={"tiny": {"path": str(family)}}))
    assert result.exit_code == 1
    [line] = error_lines(result.output)
    assert "ft_b" in line and "holds no detector" in line
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["family", "missing.yml", "typo.yml"]


def test_a_cache_from_before_digests_is_rebuilt_with_one_line(study, monkeypatch):
    import mergekit_clip.integrity as integrity

    monkeypatch.setattr(integrity, "_legacy_warned", [])
    file, out = study
    entries = sorted((out / "scores").rglob("*.npz"))
    for entry in entries:
        digest_path(entry).unlink()
    result = run(file)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("Warning:")]
    assert len(warnings) == 1 and "written before digests" in warnings[0]
    assert all(recorded_digest(e) == hashlib.sha256(e.read_bytes()).hexdigest() for e in entries)
