"""introselect.leading_mask names exactly the entries torch's CPU sort puts first, ties included."""

from __future__ import annotations

import pytest
import torch

from mergekit_clip.plugin.kernels.introselect import leading_mask, replay_matches_torch


def sorted_prefix(values: torch.Tensor, k: int, descending: bool) -> torch.Tensor:
    """The independent answer: run the real (unstable) sort and mark its first k entries."""
    mask = torch.zeros(values.numel(), dtype=torch.bool)
    mask[torch.sort(values, descending=descending).indices[:k]] = True
    return mask


def tied_arrays() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return [
        torch.randint(0, 2, (17,), generator=g).float(),  # one partition step, then the insertion sort
        torch.randint(0, 3, (40,), generator=g).float(),
        torch.randint(0, 5, (1000,), generator=g).float(),
        torch.randint(0, 200, (30_001,), generator=g).float(),  # quantised magnitudes, as fp32 task vectors
        torch.zeros(500),  # a single value
        torch.arange(300, dtype=torch.float32),  # sorted input: median-of-three keeps it balanced
        torch.arange(300, 0, -1, dtype=torch.float32),
        (torch.randn(50_000, generator=g) * 1e-3).abs(),  # few ties
    ]


@pytest.mark.parametrize("descending", [True, False])
def test_leading_mask_equals_the_real_sort(descending):
    g = torch.Generator().manual_seed(4)
    for values in tied_arrays():
        n = values.numel()
        ks = {0, 1, n // 2, n - 1, n} | {int(k) for k in torch.randint(1, n, (6,), generator=g)}
        for k in sorted(ks):
            got = leading_mask(values, k, descending)
            assert got is not None
            assert torch.equal(got, sorted_prefix(values, k, descending)), (n, k, descending)
            assert int(got.sum()) == k


def test_leading_mask_leaves_its_input_alone():
    values = torch.randint(0, 4, (2000,)).float()
    before = values.clone()
    leading_mask(values, 700, descending=True)
    assert torch.equal(values, before)


def test_tied_entries_are_not_taken_in_index_order():
    """The case the replay exists for: the real sort keeps a scattered subset of the tied entries."""
    values = torch.randint(0, 3, (5000,), generator=torch.Generator().manual_seed(0)).float()
    k = int((values == 2).sum()) + 100  # all the 2s, and 100 of the many 1s
    stable = torch.zeros(5000, dtype=torch.bool)
    stable[torch.sort(values, descending=True, stable=True).indices[:k]] = True
    got = leading_mask(values, k, descending=True)
    assert not torch.equal(got, stable)
    assert torch.equal(got, sorted_prefix(values, k, True))


def test_this_torch_build_sorts_as_replayed():
    assert replay_matches_torch() is True
