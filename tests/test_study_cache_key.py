"""A candidate's key follows every input that changes its merge: data-aware methods (regmean, fisher) hash the
statistics files they read, so recomputed statistics with new content re-merge them and unchanged ones reuse."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors import safe_open
from study_support import make_dataset, make_family

from mergekit_clip.stats.compute import compute_stats
from mergekit_clip.stats.store import stats_path
from study.candidates import plan_merges, run_merges
from study.config import StudyConfig
from study.hashing import FileHashes, recipe_key

SELECT = {"mode": "full_finetune", "lr": 1e-3}
CHOSEN = ("ft_lr1e-3_s0", "ft_lr1e-3_s1")


@pytest.fixture()
def world(tmp_path, tiny_spec):
    from mergekit_clip.recipe import load_family

    make_family(tmp_path / "family", tiny_spec)
    make_dataset(tmp_path / "json", tmp_path / "data", "Tiny-FF", videos=4, frames=2, seed=0)
    for name in CHOSEN:
        for kind in ("gram", "fisher"):
            _stats(tmp_path, name, kind, max_frames=6)
    study = StudyConfig.model_validate({
        "output": str(tmp_path / "out"),
        "data": {"json_root": str(tmp_path / "json"), "data_root": str(tmp_path / "data"), "source": "Tiny-FF",
                 "test": ["Tiny-FF"]},
        "families": {"tiny": {"path": str(tmp_path / "family")}},
        "merges": {"regmean": {"select": SELECT}, "fisher": {"select": SELECT}, "ties": {"select": SELECT}},
    })  # fmt: skip
    return tmp_path, study, {"tiny": load_family(tmp_path / "family")}


def _stats(root, name: str, kind: str, max_frames: int) -> tuple[dict, dict]:
    """Compute (or recompute) one statistics file; returns its tensors and metadata."""
    ingredient = root / "family" / "ingredients" / name
    compute_stats(ingredient, kind, dataset="Tiny-FF", split="train", json_root=root / "json",
                  data_root=root / "data", max_frames=max_frames, batch_size=4)  # fmt: skip
    return _read(stats_path(ingredient, kind))


def _read(path) -> tuple[dict, dict]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())


def _same(a: tuple[dict, dict], b: tuple[dict, dict]) -> bool:
    return a[1] == b[1] and a[0].keys() == b[0].keys() and all(torch.equal(a[0][k], b[0][k]) for k in a[0])


def _plan(study, families):
    """A fresh FileHashes from the study's cache file, as a new run of the study would make."""
    from mergekit_clip.stats.store import clear_cache

    clear_cache()  # the plugin's per-process cache of opened statistics (a new run starts without it)
    hashes = FileHashes(study.output / "cache" / "file_hashes.json")
    candidates = plan_merges(study, families, hashes)
    hashes.save()
    return {c.group: c for c in candidates}


def test_statistics_join_the_key_of_the_methods_that_read_them(world):
    root, study, families = world
    first = _plan(study, families)
    assert run_merges(list(first.values()), study.output, study, progress=False) == {"reused": 0, "merged": 3}

    # recomputed with the same frames: the file is rewritten (new inode; safetensors orders the header's metadata
    # at random, so even its bytes may differ) with the same tensors and metadata
    gram = stats_path(root / "family" / "ingredients" / CHOSEN[0], "gram")
    before, inode = _read(gram), gram.stat().st_ino
    assert _same(_stats(root, CHOSEN[0], "gram", max_frames=6), before)
    assert gram.stat().st_ino != inode
    same = _plan(study, families)
    assert {g: c.key for g, c in same.items()} == {g: c.key for g, c in first.items()}
    assert run_merges(list(same.values()), study.output, study, progress=False) == {"reused": 3, "merged": 0}

    # recomputed on other frames: new content -> regmean (reads gram) re-merges; fisher and ties do not
    assert not _same(_stats(root, CHOSEN[0], "gram", max_frames=2), before)
    gram_changed = _plan(study, families)
    assert gram_changed["regmean"].key != first["regmean"].key
    assert gram_changed["fisher"].key == first["fisher"].key
    assert gram_changed["ties"].key == first["ties"].key
    assert run_merges(list(gram_changed.values()), study.output, study, progress=False) == {"reused": 2, "merged": 1}
    assert (gram_changed["regmean"].model_dir(study.output) / "config.json").exists()

    # the Fisher of the other ingredient: only fisher's key moves
    _stats(root, CHOSEN[1], "fisher", max_frames=2)
    fisher_changed = _plan(study, families)
    assert fisher_changed["fisher"].key != first["fisher"].key
    assert fisher_changed["regmean"].key == gram_changed["regmean"].key
    assert fisher_changed["ties"].key == first["ties"].key


def test_a_data_free_method_keeps_its_key_with_or_without_statistics(world):
    root, study, families = world
    ties = _plan(study, families)["ties"]
    for name in CHOSEN:
        stats_path(root / "family" / "ingredients" / name, "gram").unlink()
    assert _plan(study, families)["ties"].key == ties.key
    # a data-aware method's key says a file is missing; computing it changes the key
    regmean = _plan(study, families)["regmean"]
    _stats(root, CHOSEN[0], "gram", max_frames=6)
    _stats(root, CHOSEN[1], "gram", max_frames=6)
    assert _plan(study, families)["regmean"].key != regmean.key


def test_a_replaced_file_with_the_same_size_and_mtime_is_hashed_again(tmp_path):
    """Weights and statistics are written by rename; within one coarse mtime tick, only the inode tells."""
    file = tmp_path / "gram.safetensors"
    file.write_bytes(b"a" * 64)
    hashes = FileHashes(tmp_path / "cache.json")
    old = hashes.file(file)
    hashes.save()
    stat = file.stat()
    tmp = tmp_path / "gram.tmp"
    tmp.write_bytes(b"b" * 64)
    os.replace(tmp, file)
    os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same mtime, new inode
    assert file.stat().st_ino != stat.st_ino
    assert FileHashes(tmp_path / "cache.json").file(file) != old


def test_prefetch_gives_the_same_hashes_as_one_by_one(tmp_path):
    files = []
    for i in range(5):
        files.append(tmp_path / f"w{i}.bin")
        files[-1].write_bytes(bytes([i]) * ((1 << 16) + i))
    one_by_one = [FileHashes().file(f) for f in files]
    hashes = FileHashes(tmp_path / "cache.json")
    hashes.prefetch(files + files[:2])  # repeats are hashed once
    assert [hashes.file(f) for f in files] == one_by_one
    hashes.save()
    assert len(FileHashes(tmp_path / "cache.json")._known) == 5


def test_recipe_key_of_a_stats_method_lists_the_files_per_model(world):
    """The key's statistics part is per referenced model in recipe order: swapping two files changes it."""
    root, study, families = world
    recipe = _plan(study, families)["regmean"].recipe
    options = {"random_seed": 0}
    key = recipe_key(recipe, FileHashes(), options)
    a, b = (stats_path(root / "family" / "ingredients" / n, "gram") for n in CHOSEN)
    assert not _same(_read(a), _read(b))
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    assert recipe_key(recipe, FileHashes(), options) != key


def test_a_statistics_hash_ignores_the_order_of_the_header(tmp_path):
    """safetensors writes its metadata map in arbitrary order: the same tensors and metadata hash the same."""
    from safetensors.torch import save_file

    first = tmp_path / "a.safetensors"
    save_file({"w": torch.arange(6.0).reshape(2, 3)}, str(first), {"kind": "gram", "dataset": "Tiny-FF"})
    raw = first.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    reordered = {"__metadata__": dict(reversed(list(header.pop("__metadata__").items()))), **header}
    text = json.dumps(reordered, separators=(",", ":")).encode().ljust(size)
    assert len(text) == size and text != raw[8 : 8 + size]
    second = tmp_path / "b.safetensors"
    second.write_bytes(raw[:8] + text + raw[8 + size :])
    hashes = FileHashes()
    assert hashes.file(first) != hashes.file(second)
    assert hashes.safetensors(first) == hashes.safetensors(second)
    assert torch.equal(_read(second)[0]["w"], torch.arange(6.0).reshape(2, 3))
    save_file({"w": torch.arange(6.0).reshape(2, 3) + 1}, str(second), {"kind": "gram", "dataset": "Tiny-FF"})
    assert FileHashes().safetensors(first) != FileHashes().safetensors(second)  # fresh: no stat-keyed cache


def test_weights_sha256_is_what_statistics_files_record(world):
    """The cached hash equals detector.io.weights_hash, the ``weights_sha256`` a statistics file is checked against."""
    from mergekit_clip.detector.io import weights_hash

    root, _, _ = world
    ingredient = root / "family" / "ingredients" / CHOSEN[0]
    hashes = FileHashes()
    assert hashes.weights_sha256(ingredient) == weights_hash(ingredient)
    assert _read(stats_path(ingredient, "gram"))[1]["weights_sha256"] == hashes.weights_sha256(ingredient)


CONFIG_CHANGES = [("preprocess", {"mean": [0.5, 0.5, 0.5]}), ("head", {"labels": ["fake", "real"]})]


@pytest.mark.parametrize("field, value", CONFIG_CHANGES)
def test_a_changed_config_with_the_same_weights_changes_the_keys_and_provenance_does_not(world, field, value):
    """Preprocessing and head labels live in config.json, not in the weights: a changed one must re-merge its
    candidates and re-score the model (both are keyed by FileHashes.model); a provenance note changes neither."""
    root, study, families = world
    ingredient = root / "family" / "ingredients" / CHOSEN[0]
    ties, model = _plan(study, families)["ties"].key, FileHashes().model(ingredient)
    config = ingredient / "config.json"
    cfg = json.loads(config.read_text())
    cfg["provenance"]["note"] = "scored again elsewhere"
    config.write_text(json.dumps(cfg))
    assert (_plan(study, families)["ties"].key, FileHashes().model(ingredient)) == (ties, model)
    cfg[field] = {**cfg[field], **value}
    config.write_text(json.dumps(cfg))
    assert _plan(study, families)["ties"].key != ties
    assert FileHashes().model(ingredient) != model
