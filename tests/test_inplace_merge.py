"""inplace_merge.merge_group returns stock mergekit's bits for every task-arithmetic method and option."""

from __future__ import annotations

import mergekit.merge_methods.registry as registry  # importing mergekit registers the plugin
import pytest
import torch
from merge_support import assert_bitwise
from mergekit.merge_methods.base import TensorGroup

from mergekit_clip.plugin.kernels import inplace_merge

METHODS = ["ties", "dare_ties", "breadcrumbs_ties", "della", "task_arithmetic", "dare_linear", "breadcrumbs"]


def stock_merge_group():
    inplace_merge.install()
    return inplace_merge._STOCK["merge_group"]


def group_of(shape, n: int, dtype, seed: int) -> TensorGroup:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=g)
    tensors = [base.to(dtype)]
    for i in range(n):
        delta = torch.round(torch.randn(shape, generator=g) * 3) / 64  # quantised: sign ties and exact zeros
        if i == 1:
            delta = -tensors[1].float() + base  # the first two cancel exactly in places: sign_weight == 0
        tensors.append((base + delta).to(dtype))
    return TensorGroup.from_tensors(tensors, ids=["base", *[f"m{i}" for i in range(n)]], base_index=0)


def parameters(method, group: TensorGroup, **shared) -> dict:
    ids = [e.id for e in group.non_base]
    weights = [1.0, -0.5, 0.7, 2.0, 0.3, 1.0, 0.9, 1.1, 0.2][: len(ids)]
    params = {"weight": dict(zip(ids, weights)), "density": {i: 0.4 for i in ids}}
    params.update(int8_mask=False, normalize=method.default_normalize, rescale=method.default_rescale)
    params["lambda"] = 1.0
    if "breadcrumbs" in method.method_name:
        params["gamma"] = {i: 0.05 for i in ids}
    if method.method_name == "della":
        params["epsilon"] = {i: 0.15 for i in ids}
    params.update(shared)
    return params


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("shape", [(), (7,), (33, 5), (64, 48)])
@pytest.mark.parametrize("n", [1, 2, 3, 5, 9])
def test_bitwise_equal_to_stock(name, shape, n):
    method = registry.get(name)
    group = group_of(shape, n, torch.float32, seed=n)
    params = parameters(method, group)
    if name == "della" and shape == ():  # mergekit 0.1.5's della ranks along dim 1: a 0-dim tensor fails alike
        for merge in (stock_merge_group(), inplace_merge.merge_group):
            with pytest.raises(IndexError, match="Dimension out of range"):
                merge(method, group, **params)
        return
    torch.manual_seed(0)
    expected = stock_merge_group()(method, group, **params)
    torch.manual_seed(0)
    got = inplace_merge.merge_group(method, group, **params)
    assert_bitwise(got, expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "options",
    [{"int8_mask": True}, {"normalize": False}, {"normalize": True, "lambda": 0.6}, {"rescale": True}],
)
def test_options_and_half_dtypes_bitwise_equal_to_stock(dtype, options):
    for name in ("ties", "breadcrumbs_ties", "task_arithmetic"):
        method = registry.get(name)
        group = group_of((40, 24), 4, dtype, seed=3)
        params = parameters(method, group, **options)
        expected = stock_merge_group()(method, group, **params)
        assert_bitwise(inplace_merge.merge_group(method, group, **params), expected)


def test_count_consensus_bitwise_equal_to_stock():
    from mergekit.merge_methods.generalized_task_arithmetic import ConsensusMethod
    from mergekit.sparsify import SparsificationMethod

    counting = registry.get("ties").__class__(
        consensus_method=ConsensusMethod.count,
        sparsification_method=SparsificationMethod.magnitude,
        default_normalize=True,
        default_rescale=False,
        method_name="ties_count",
        method_pretty_name=None,
        method_reference_url=None,
    )
    for int8_mask in (False, True):
        group = group_of((50, 30), 4, torch.float32, seed=5)
        params = parameters(counting, group, int8_mask=int8_mask)
        assert_bitwise(
            inplace_merge.merge_group(counting, group, **params), stock_merge_group()(counting, group, **params)
        )


def test_installed_for_every_task_arithmetic_method():
    from mergekit.merge_methods.generalized_task_arithmetic import GeneralizedTaskArithmeticMerge

    assert inplace_merge.install() is True
    assert GeneralizedTaskArithmeticMerge.merge_group is inplace_merge.merge_group
    assert inplace_merge._STOCK["merge_group"].__module__.startswith("mergekit.")
