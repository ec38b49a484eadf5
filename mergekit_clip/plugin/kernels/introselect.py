"""Which entries torch's CPU sort puts first, found in O(n) by replaying only the partitions that decide it.

Stock mergekit keeps ``torch.argsort(w, descending=True)[:k]``. On CPU that sort is not stable: torch sorts
(value, index) pairs with libstdc++'s ``std::sort``, an introsort (median-of-three Hoare partitions down to
runs of 16, then one insertion sort). Among entries tied in value, the ones that land in the first ``k``
positions therefore depend on the whole array, and a selection such as ``kthvalue`` cannot tell which.

But the set of entries in positions ``[0, k)`` only depends on the partitions whose range contains the
boundary ``k``: a partition entirely on one side of it only reorders that side. So we replay introsort's
partition steps along that one path, like a quickselect (``n + n/2 + ...`` element-wise work), each step
vectorised in torch:

* median of three (positions ``first + 1``, ``mid``, ``last - 1``) swapped to ``first``;
* Hoare partition of ``(first, last)`` around it: the i-th entry the left scan stops at (``not comp(x, p)``)
  swaps with the i-th the right scan stops at (``not comp(p, x)``) while the left one lies before the right
  one; the cut is where the scans meet;
* once the range holding ``k`` has at most 16 entries, the final insertion sort orders it stably.

:func:`leading_mask` returns ``None`` where the replay would not be exact (introsort's depth limit reached,
which switches that range to heapsort; non-finite values), and :func:`replay_matches_torch` checks once per
process that this torch build still sorts this way, so callers can fall back to the real sort otherwise.
"""

from __future__ import annotations

import functools

import torch

_RUN = 16  # libstdc++ _S_threshold: ranges this short are left to the final insertion sort


def _median_of_three_to_first(vals: torch.Tensor, idx: torch.Tensor, descending: bool) -> None:
    size = vals.numel()
    mid = size // 2
    a, b, c = vals[1].item(), vals[mid].item(), vals[size - 1].item()

    def comp(x: float, y: float) -> bool:
        return x > y if descending else x < y

    if comp(a, b):
        chosen = mid if comp(b, c) else (size - 1 if comp(a, c) else 1)
    elif comp(a, c):
        chosen = 1
    elif comp(b, c):
        chosen = size - 1
    else:
        chosen = mid
    swap = torch.tensor([chosen, 0])
    vals[[0, chosen]] = vals[swap]
    idx[[0, chosen]] = idx[swap]


def _partition(vals: torch.Tensor, idx: torch.Tensor, descending: bool) -> int | None:
    """Hoare-partition ``vals[1:]`` around the pivot ``vals[0]`` in place (with ``idx``); return the cut."""
    pivot = vals[0]
    rest = vals[1:]
    # comp(x, p) is x > p (descending) or x < p; the left scan stops where it is false, the right where
    # comp(p, x) is false. Equal entries stop both scans, which is what keeps introsort balanced on ties.
    if descending:
        left_stops, right_stops = rest <= pivot, rest >= pivot
    else:
        left_stops, right_stops = rest >= pivot, rest <= pivot
    left = left_stops.nonzero().squeeze(1)
    right = right_stops.nonzero().squeeze(1).flip(0)
    pairs = min(left.numel(), right.numel())
    swaps = int(torch.count_nonzero(left[:pairs] < right[:pairs]))  # a prefix: left rises, right falls
    meet = []
    if swaps < left.numel():
        meet.append(int(left[swaps]))
    if swaps > 0:
        meet.append(int(right[swaps - 1]))  # that slot now holds a left-stop value, so the scan halts there
    if not meet:
        return None
    lo, hi = left[:swaps] + 1, right[:swaps] + 1
    for arr in (vals, idx):
        moved = arr[lo]
        arr[lo] = arr[hi]
        arr[hi] = moved
    return 1 + min(meet)


def leading_mask(values: torch.Tensor, k: int, descending: bool) -> torch.Tensor | None:
    """Boolean mask of the entries ``torch.sort(values, descending=...)`` on CPU puts at positions ``< k``.

    ``values``: a finite 1-D float tensor on CPU (not modified). ``None`` when the replay cannot be exact.
    """
    n = values.numel()
    keep = torch.zeros(n, dtype=torch.bool)
    if k <= 0:
        return keep
    if k >= n:
        return keep.fill_(True)
    vals = values.clone()
    idx = torch.arange(n)
    lo = 0  # vals/idx hold positions [lo, lo + vals.numel()) of the array being sorted
    depth = 2 * (n.bit_length() - 1)  # std::__lg(n) * 2
    while vals.numel() > _RUN:
        if depth == 0:  # introsort would heapsort this range: not replayed
            return None
        depth -= 1
        _median_of_three_to_first(vals, idx, descending)
        cut = _partition(vals, idx, descending)
        if cut is None:
            return None
        if lo + cut <= k:
            keep[idx[:cut]] = True
            if lo + cut == k:
                return keep
            vals, idx, lo = vals[cut:], idx[cut:], lo + cut
        else:
            vals, idx = vals[:cut], idx[:cut]
    order = torch.sort(vals, descending=descending, stable=True).indices  # insertion sort is stable
    keep[idx[order[: k - lo]]] = True
    return keep


@functools.cache
def replay_matches_torch() -> bool:
    """Whether :func:`leading_mask` reproduces this torch build's CPU sort (checked once, a few ms)."""
    g = torch.Generator().manual_seed(0)
    for n, levels in ((5000, 7), (20000, 300), (257, 2)):
        w = torch.randint(0, levels, (n,), generator=g).float()
        for descending in (True, False):
            order = torch.sort(w, descending=descending).indices
            for k in (1, n // 3, n - 1):
                expected = torch.zeros(n, dtype=torch.bool)
                expected[order[:k]] = True
                got = leading_mask(w, k, descending)
                if got is None or not torch.equal(got, expected):
                    return False
    return True
