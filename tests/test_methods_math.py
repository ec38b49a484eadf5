"""The plugin's extra merge methods on small matrices, against independent float64 numpy implementations,
plus the property each paper relies on (flat spectra, orthonormal stacked singular vectors, least squares)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mergekit.merge_methods.base import TensorGroup
from safetensors.torch import save_file

from mergekit_clip.detector.io import weights_hash
from mergekit_clip.plugin.methods import METHOD_MODULES, method_objects, register_methods
from mergekit_clip.stats.store import StatsError, clear_cache, write_stats

MATRIX = "visual.transformer.resblocks.0.mlp.c_fc.weight"
BIAS = "visual.transformer.resblocks.0.mlp.c_fc.bias"
T, M, N = 4, 12, 8  # 4 tasks on a 12 x 8 layer: rank 8, 2 directions per task for TSV-M


def _family(seed: int = 0, shape=(M, N)) -> tuple[np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    base = rng.normal(size=shape)
    return base, [base + 0.1 * rng.normal(size=shape) for _ in range(T)]


def _merge(name: str, base, models, tensor_name=MATRIX, **params) -> np.ndarray:
    tensors = ([torch.tensor(base, dtype=torch.float32)] if base is not None else []) + [
        torch.tensor(m, dtype=torch.float32) for m in models
    ]
    group = TensorGroup.from_tensors(tensors, base_index=0 if base is not None else None, name=tensor_name)
    (out,) = method_objects()[name]((group,), parameters=params)
    assert out.dtype == torch.float32 and out.shape == tensors[0].shape
    return out.double().numpy()


def _svd(a):
    return np.linalg.svd(a, full_matrices=False)


def _polar(a):
    p, _, qh = _svd(a)
    return p @ qh


def _low_rank(a, k):
    u, s, vh = _svd(a)
    return u[:, :k] @ np.diag(s[:k]) @ vh[:k]


def test_registry_lists_every_method_once_and_registration_is_idempotent():
    from mergekit.merge_methods import registered_methods

    register_methods()
    assert register_methods() == []
    names = [m.spec.name for m in registered_methods()]
    assert all(names.count(n) == 1 for n in METHOD_MODULES)


def test_a_foreign_method_under_our_name_is_a_conflict_naming_both(monkeypatch):
    from mergekit.merge_methods import registry
    from mergekit.merge_methods.nearswap import nearswap_merge

    register_methods()
    monkeypatch.setitem(registry._METHODS, "tsv_m", nearswap_merge)
    with pytest.raises(RuntimeError, match=r"'tsv_m'.*NearSwap.*tsv_m:tsv_m_merge"):
        register_methods()


# ------------------------------------------------------------------ TSV-M


def _tsv_numpy(base, models, alpha):
    tasks = [m - base for m in models]
    k = min(base.shape) // len(tasks)
    parts = [_svd(t) for t in tasks]
    u = np.concatenate([p[0][:, :k] for p in parts], axis=1)
    s = np.concatenate([p[1][:k] for p in parts])
    v = np.concatenate([p[2][:k].T for p in parts], axis=1)
    return base + alpha * _polar(u) @ np.diag(s) @ _polar(v).T


def test_tsv_m_matches_numpy_and_its_stacked_singular_vectors_are_orthonormal():
    from mergekit_clip.plugin.methods.tsv_m import tsv_task_matrix

    base, models = _family()
    np.testing.assert_allclose(_merge("tsv_m", base, models, alpha=0.7), _tsv_numpy(base, models, 0.7), atol=1e-5)
    tasks = torch.tensor(np.stack([m - base for m in models]), dtype=torch.float32)
    u, s, v = tsv_task_matrix(tasks)
    assert u.shape == (M, T * (N // T)) and v.shape == (N, T * (N // T))
    torch.testing.assert_close(u.T @ u, torch.eye(u.shape[1]), atol=1e-5, rtol=0)
    torch.testing.assert_close(v.T @ v, torch.eye(v.shape[1]), atol=1e-5, rtol=0)


def test_svd_methods_treat_biases_and_heads_as_task_arithmetic_on_the_mean():
    base, models = _family(shape=(N,))
    expected = base + 0.5 * np.mean([m - base for m in models], axis=0)
    for name in ("tsv_m", "iso_c", "iso_cts"):
        np.testing.assert_allclose(_merge(name, base, models, tensor_name=BIAS, alpha=0.5), expected, atol=1e-6)
    head_base, heads = _family(shape=(2, N))
    for name in ("tsv_m", "iso_c", "iso_cts", "real_aware"):
        out = _merge(name, head_base, heads, tensor_name="head.weight", alpha=1.0)
        np.testing.assert_allclose(out, np.mean(heads, axis=0), atol=1e-6)


# ------------------------------------------------------------------ Iso-C / Iso-CTS


def test_iso_c_has_a_flat_spectrum_equal_to_the_mean_singular_value_of_the_summed_task_matrix():
    base, models = _family(1)
    summed = sum(m - base for m in models)
    u, s, vh = _svd(summed)
    out = _merge("iso_c", base, models, alpha=1.3)
    np.testing.assert_allclose(out, base + 1.3 * s.mean() * u @ vh, atol=1e-5)
    spectrum = np.linalg.svd((out - base) / 1.3, compute_uv=False)
    np.testing.assert_allclose(spectrum, np.full(min(M, N), s.mean()), rtol=1e-4)


def _iso_cts_numpy(base, models, alpha, fraction):
    tasks = [m - base for m in models]
    r = min(base.shape)
    s_task = round((r - int(fraction * r)) / len(tasks))  # the authors' rule (Python's round)
    k = r - len(tasks) * s_task
    u, s, vh = _svd(sum(tasks))
    uc, sc, vc = u[:, :k], s[:k], vh[:k].T
    us, ss, vs = [uc], [sc], [vc]
    for t in tasks:
        ut, st, vht = _svd((np.eye(base.shape[0]) - uc @ uc.T) @ t)
        us.append(ut[:, :s_task])
        ss.append(st[:s_task])
        vs.append(vht[:s_task].T)
    flat = np.concatenate(ss).mean()
    return base + alpha * flat * _polar(np.concatenate(us, 1)) @ _polar(np.concatenate(vs, 1)).T, flat


def test_iso_cts_matches_numpy_keeps_the_common_subspace_and_is_isotropic():
    base, models = _family(2)
    expected, flat = _iso_cts_numpy(base, models, 1.0, 0.5)
    out = _merge("iso_cts", base, models, alpha=1.0, common_fraction=0.5)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    spectrum = np.linalg.svd(out - base, compute_uv=False)
    np.testing.assert_allclose(spectrum, np.full(min(M, N), flat), rtol=1e-4)
    # common_fraction = 1: no task-specific directions, the update is Iso-C's
    np.testing.assert_allclose(
        _merge("iso_cts", base, models, common_fraction=1.0), _merge("iso_c", base, models), atol=1e-5
    )


# (rank r, tasks T, common_fraction c) -> (common k, per task s), worked out by hand from the authors' rule
# s = round((r - int(c r)) / T) (Python's round: half to even), k = r - T s; and the floor rule beside it.
SUBSPACE_TABLE = [
    # r, T, c, round (k, s), floor (k, s)      int(c r); (r - int(c r)) / T
    (32, 4, 0.8, (24, 2), (28, 1)),  # 25; 7 / 4 = 1.75
    (32, 3, 0.8, (26, 2), (26, 2)),  # 25; 7 / 3 = 2.33
    (32, 8, 0.8, (24, 1), (32, 0)),  # 25; 7 / 8 = 0.875
    (12, 8, 0.5, (4, 1), (12, 0)),  # 6; 6 / 8 = 0.75
    (10, 2, 0.5, (6, 2), (6, 2)),  # 5; 5 / 2 = 2.5: half to even gives 2 (half up would give 3)
    (14, 2, 0.5, (6, 4), (8, 3)),  # 7; 7 / 2 = 3.5: half to even gives 4
    (768, 4, 0.8, (616, 38), (616, 38)),  # 614; 154 / 4 = 38.5: half to even gives 38
    (768, 5, 0.8, (613, 31), (618, 30)),  # 614; 154 / 5 = 30.8
    (7, 2, 0.0, (1, 3), (1, 3)),  # 0; 7 / 2 = 3.5 -> 4 needs 8 > 7 directions: falls to floor(7 / 2) = 3
    (8, 4, 1.0, (8, 0), (8, 0)),  # 8; 0: no task-specific directions (Iso-C)
]


@pytest.mark.parametrize("r, t, c, by_round, by_floor", SUBSPACE_TABLE)
def test_iso_cts_subspace_sizes_follow_the_authors_round_and_the_floor_option(r, t, c, by_round, by_floor):
    from mergekit_clip.plugin.methods.iso_cts import subspace_sizes

    assert subspace_sizes(r, t, c) == by_round
    assert subspace_sizes(r, t, c, "floor") == by_floor


def test_iso_cts_subspace_rounding_reaches_the_merge():
    # r = 8, T = 4, c = 0.7: int(5.6) = 5, 3 / 4 = 0.75 -> round 1 (k 4: Iso-CTS) but floor 0 (k 8: Iso-C)
    base, models = _family(5)
    expected, _ = _iso_cts_numpy(base, models, 1.0, 0.7)
    np.testing.assert_allclose(_merge("iso_cts", base, models, common_fraction=0.7), expected, atol=1e-5)
    np.testing.assert_allclose(
        _merge("iso_cts", base, models, common_fraction=0.7, subspace_rounding="floor"),
        _merge("iso_c", base, models),
        atol=1e-5,
    )
    assert not np.allclose(expected, _merge("iso_c", base, models), atol=1e-3)


# ------------------------------------------------------------------ matrix_policy

POSITIONAL = "visual.positional_embedding"


def _iso_c_numpy(base, models, alpha):
    u, s, vh = _svd(sum(m - base for m in models))
    return base + alpha * s.mean() * u @ vh


@pytest.mark.parametrize("name", ["tsv_m", "iso_c", "iso_cts"])
def test_matrix_policy_layers_averages_embeddings_and_heads_all_2d_merges_them_as_matrices(name):
    alpha = 0.6
    cases = [(POSITIONAL, *_family(6, shape=(10, N))), ("head.weight", *_family(7, shape=(2, N)))]  # head: rank 2 < T
    for tensor_name, base, models in cases:
        mean_update = base + alpha * np.mean([m - base for m in models], axis=0)
        np.testing.assert_allclose(_merge(name, base, models, tensor_name=tensor_name, alpha=alpha), mean_update,
                                   atol=1e-6)  # fmt: skip
        if name == "tsv_m":  # the head: floor(2 / 4) = 0 directions per task, the authors' code adds nothing
            as_matrix = _tsv_numpy(base, models, alpha) if min(base.shape) >= T else base
        elif name == "iso_c":
            as_matrix = _iso_c_numpy(base, models, alpha)
        else:
            as_matrix = _iso_cts_numpy(base, models, alpha, 0.8)[0]
        all_2d = _merge(name, base, models, tensor_name=tensor_name, alpha=alpha, matrix_policy="all_2d")
        np.testing.assert_allclose(all_2d, as_matrix, atol=1e-5)
        assert not np.allclose(all_2d, mean_update, atol=1e-3)
    # a bias is the mean task vector under both policies
    base, models = _family(8, shape=(N,))
    np.testing.assert_allclose(
        _merge(name, base, models, tensor_name=BIAS, alpha=alpha, matrix_policy="all_2d"),
        base + alpha * np.mean([m - base for m in models], axis=0),
        atol=1e-6,
    )


# ------------------------------------------------------------------ CART


def test_cart_matches_numpy_and_full_rank_gives_the_weight_average():
    _, models = _family(3)
    average = np.mean(models, axis=0)
    k = max(1, int(0.25 * N))
    expected = average + 0.8 * sum(_low_rank(m - average, k) for m in models)
    np.testing.assert_allclose(_merge("cart", None, models, rank_ratio=0.25, scale=0.8), expected, atol=1e-5)
    np.testing.assert_allclose(_merge("cart", None, models, rank_ratio=1.0), average, atol=1e-5)
    np.testing.assert_allclose(_merge("cart", None, [m[0] for m in models], tensor_name=BIAS), average[0], atol=1e-6)


def test_methods_refuse_inputs_their_contract_excludes():
    base, models = _family()
    with pytest.raises(ValueError, match="base"):
        _merge("cart", base, models)
    with pytest.raises(ValueError, match="base"):
        _merge("tsv_m", None, models)


# ------------------------------------------------------------------ real-aware


def test_real_aware_keeps_the_shared_part_whole_and_matches_residual_norms():
    base, models = _family(4)
    tasks = [m - base for m in models]
    shared = _low_rank(np.mean(tasks, axis=0), 2)  # 0.25 * rank 8
    residuals = [_low_rank(t - shared, 1) for t in tasks]  # 0.125 * 8
    combined = sum(residuals)
    target = np.mean([np.linalg.norm(e) for e in residuals])
    expected = base + 0.9 * (shared + combined * target / np.linalg.norm(combined))
    out = _merge("real_aware", base, models, alpha=0.9, shared_rank_ratio=0.25, residual_rank_ratio=0.125)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert np.linalg.norm((out - base) / 0.9 - shared) == pytest.approx(target, rel=1e-4)


# ------------------------------------------------------------------ RegMean / Fisher (statistics on disk)


def _ingredient(root, name, tensors: dict[str, np.ndarray]):
    path = root / name
    path.mkdir()
    save_file({k: torch.tensor(v, dtype=torch.float32) for k, v in tensors.items()}, str(path / "model.safetensors"))
    return path


def _merge_dirs(name, dirs, arrays, tensor_name=MATRIX, **params):
    tensors = [torch.tensor(a, dtype=torch.float32) for a in arrays]
    group = TensorGroup.from_tensors(tensors, ids=[str(d) for d in dirs], name=tensor_name)
    (out,) = method_objects()[name]((group,), parameters=params)
    return out.double().numpy()


@pytest.fixture
def regression_family(tmp_path):
    """Three linear layers (out 5 x in 6) and their input batches X_i (full-rank Grams)."""
    clear_cache()
    rng = np.random.default_rng(5)
    weights = [rng.normal(size=(5, 6)) for _ in range(3)]
    inputs = [rng.normal(size=(40, 6)) @ np.diag(rng.uniform(0.5, 2, size=6)) for _ in range(3)]
    dirs = []
    for i, (w, x) in enumerate(zip(weights, inputs)):
        d = _ingredient(tmp_path, f"ft{i}", {MATRIX: w, BIAS: w[:, 0]})
        gram = torch.tensor(x.T @ x / len(x), dtype=torch.float32)
        write_stats(d, "gram", {MATRIX: gram}, {"weights_sha256": weights_hash(d), "input_axis": {MATRIX: 1}})
        dirs.append(d)
    yield dirs, weights, inputs
    clear_cache()


def test_regmean_is_the_exact_least_squares_solution_with_full_rank_grams(regression_family):
    dirs, weights, inputs = regression_family
    x = np.concatenate([xi / np.sqrt(len(xi)) for xi in inputs])  # per-token normalised Grams
    y = np.concatenate([xi @ wi.T / np.sqrt(len(xi)) for xi, wi in zip(inputs, weights)])
    exact = np.linalg.lstsq(x, y, rcond=None)[0].T
    np.testing.assert_allclose(_merge_dirs("regmean", dirs, weights, off_diagonal_scale=1.0), exact, atol=1e-4)


def test_regmean_off_diagonal_scaling_matches_the_formula_and_biases_are_averaged(regression_family):
    dirs, weights, inputs = regression_family
    grams = [xi.T @ xi / len(xi) for xi in inputs]
    scaled = [0.9 * g + 0.1 * np.diag(np.diag(g)) for g in grams]
    expected = sum(w @ g for w, g in zip(weights, scaled)) @ np.linalg.inv(sum(scaled))
    np.testing.assert_allclose(_merge_dirs("regmean", dirs, weights), expected, atol=1e-4)
    biases = [w[:, 0] for w in weights]
    np.testing.assert_allclose(_merge_dirs("regmean", dirs, biases, tensor_name=BIAS), np.mean(biases, 0), atol=1e-6)
    # visual.proj is applied as x @ proj (in x out): the same solve, transposed
    proj_dirs = []
    for d, g in zip(dirs, grams):
        write_stats(
            d,
            "gram",
            {"visual.proj": torch.tensor(g)},
            {"weights_sha256": weights_hash(d), "input_axis": {"visual.proj": 0}},
        )
        proj_dirs.append(d)
    clear_cache()
    out = _merge_dirs("regmean", proj_dirs, [w.T for w in weights], tensor_name="visual.proj")
    np.testing.assert_allclose(out, expected.T, atol=1e-4)


def test_fisher_with_equal_fishers_is_the_weighted_mean_and_matches_numpy(tmp_path):
    clear_cache()
    rng = np.random.default_rng(6)
    weights = [rng.normal(size=(4, 3)) for _ in range(3)]
    fishers = [rng.uniform(0, 2, size=(4, 3)) for _ in range(3)]
    dirs = [_ingredient(tmp_path, f"ft{i}", {MATRIX: w}) for i, w in enumerate(weights)]
    for d in dirs:
        write_stats(d, "fisher", {MATRIX: torch.ones(4, 3)}, {"weights_sha256": weights_hash(d)})
    out = _merge_dirs("fisher", dirs, weights, weight=[1.0, 2.0, 1.0])
    np.testing.assert_allclose(out, (weights[0] + 2 * weights[1] + weights[2]) / 4, atol=1e-6)
    for d, f in zip(dirs, fishers):
        write_stats(d, "fisher", {MATRIX: torch.tensor(f)}, {"weights_sha256": weights_hash(d)})
    clear_cache()
    f_eps = [f + 1e-8 for f in fishers]
    expected = sum(f * w for f, w in zip(f_eps, weights)) / sum(f_eps)
    np.testing.assert_allclose(_merge_dirs("fisher", dirs, weights), expected, atol=1e-5)
    clear_cache()


def test_missing_and_stale_statistics_name_the_ingredient_and_the_command(regression_family, tmp_path):
    dirs, weights, _ = regression_family
    with pytest.raises(StatsError, match=r"ft0 has no fisher statistics.*mergekit-clip stats .*ft0 --kind fisher"):
        _merge_dirs("fisher", dirs, weights)
    save_file({MATRIX: torch.zeros(5, 6)}, str(dirs[1] / "model.safetensors"))  # re-trained after the stats
    clear_cache()
    with pytest.raises(StatsError, match=r"gram statistics of ingredient .*ft1 are stale.*--kind gram"):
        _merge_dirs("regmean", dirs, weights)


def test_method_table_follows_the_registry_rules():
    """The plugin's method table: the same entry again is a no-op, another target under a taken name is refused
    naming both, and the table is unchanged."""
    from mergekit_clip.plugin.methods import register_method_module

    before = dict(METHOD_MODULES)
    assert register_method_module("tsv_m", before["tsv_m"]) == before["tsv_m"]
    refused = r"plugin merge method 'tsv_m' is already registered \('mergekit_clip.plugin.methods.tsv_m:tsv_m_merge'\)"
    with pytest.raises(ValueError, match=refused + r"; refusing 'elsewhere:other'"):
        register_method_module("tsv_m", "elsewhere:other")
    assert METHOD_MODULES == before
