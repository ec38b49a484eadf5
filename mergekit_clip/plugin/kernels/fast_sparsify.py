"""O(n) sparsification kernels for mergekit's TIES / breadcrumbs / DELLA, bit-identical to stock.

Stock mergekit 0.1.5 (``mergekit/sparsify.py``) picks the kept entries of a task vector with a full
``torch.argsort`` of ``|delta|``: O(n log n), and most of a ``ties`` merge's wall time on CPU. The kept set
is a function of two order statistics only, so we find those with ``torch.kthvalue`` (a selection, O(n))
and build the same mask with a few element-wise passes:

* ``magnitude`` (TIES, DARE-free trims): keep ``|x| > t`` plus enough entries with ``|x| == t``, where ``t``
  is the k-th largest magnitude.
* ``magnitude_outliers`` (breadcrumbs): keep ascending ranks ``[n_bot, n_bot + target_n)``, i.e. the values
  strictly between two order statistics plus entries tied with either.
* ``della_magprune``: ranks need a sort, but stock sorts twice (``argsort`` of the ``argsort``); the inverse
  permutation is a scatter, so we sort once. Ranks, probabilities and the ``torch.bernoulli`` draw (same
  shape, dtype and generator state) are then identical.

**Ties in magnitude.** ``torch.argsort`` on CPU is not stable (an introsort), so which of several entries tied
at the threshold stock keeps depends on the whole array. Only those boundary ties matter, and only when they
are non-zero: a kept or dropped ``±0`` multiplies to the same ``±0`` either way. So, per tensor:

* no ambiguous boundary tie: the set is value-defined, built with ``kthvalue`` and masks;
* an ambiguous non-zero boundary tie on CPU: :func:`.introselect.leading_mask` replays the sort's
  partitions along the path holding the boundary (O(n) expected) and returns exactly the set stock keeps;
* non-finite values, a replay that cannot be exact (introsort's depth limit), or a torch build whose CPU sort
  no longer matches the replay: the stock function itself is called (``fallbacks`` counts these calls).
* GPU tensors (``mergekit-yaml --cuda``) always take the stock kernels: CUDA's sort is a fast radix sort, and
  on an H200 the selection's extra passes and host syncs made ViT-L/14 ties 1.19x slower than stock's sort.
* ``MERGEKIT_CLIP_SPARSIFY_TIES=index`` instead breaks boundary ties by position (lowest flat index first,
  what ``torch.argsort(..., stable=True)`` gives): deterministic across devices and torch builds, but then not
  bit-identical to stock mergekit on tensors with ambiguous ties.

:func:`install` swaps these functions into ``mergekit.sparsify`` (``sparsify()`` looks them up there at call
time); it is idempotent and run by :func:`mergekit_clip.plugin.register`.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Callable

import torch

from mergekit_clip.plugin.kernels.introselect import leading_mask, replay_matches_torch

TIES_ENV = "MERGEKIT_CLIP_SPARSIFY_TIES"
TIE_MODES = ("stock", "index")
_KERNELS = ("magnitude", "magnitude_outliers", "della_magprune")
_STOCK: dict[str, Callable] = {}
fallbacks: Counter = Counter()  # kernel name -> times the stock kernel had to run
replays: Counter = Counter()  # kernel name -> ambiguous ties resolved by replaying the CPU sort


def tie_mode() -> str:
    mode = os.environ.get(TIES_ENV, "stock").strip().lower() or "stock"
    if mode not in TIE_MODES:
        raise ValueError(f"{TIES_ENV}={mode!r}: expected one of {', '.join(TIE_MODES)}")
    return mode


def _stock(name: str) -> Callable:
    if name in _STOCK:
        return _STOCK[name]
    import mergekit.sparsify as sp

    fn = getattr(sp, name)
    return getattr(fn, "__wrapped__", fn)


def _magnitudes(tensor: torch.Tensor) -> torch.Tensor:
    w = tensor.abs().reshape(-1)
    return w.float()  # stock sorts float32 copies on CPU


def _finite(w: torch.Tensor) -> bool:
    return bool(torch.isfinite(w.max()))  # max propagates NaN: one reduction instead of an isfinite pass


_SAMPLE = 8192  # strided sample that brackets an order statistic before the exact selection


def _kth_smallest(w: torch.Tensor, rank: int) -> torch.Tensor:
    """Value at 0-based ascending ``rank`` (a 0-dim tensor), exact.

    On CPU a strided sample's quantiles bracket the answer (4 sigma of the sample quantile either side); two
    counting passes check the bracket holds it, and ``kthvalue`` then runs on the few entries inside: about 4x
    faster than ``kthvalue`` on the whole tensor. A bracket that misses (a skewed sample) falls back to it.
    """
    n = w.numel()
    if n < 8 * _SAMPLE:
        return torch.kthvalue(w, rank + 1).values
    sample = w[:: n // _SAMPLE].sort().values
    m = sample.numel()
    q = rank / (n - 1)
    centre = q * (m - 1)
    margin = int(4 * math.sqrt(m * q * (1 - q))) + 8
    low = sample[max(0, int(centre) - margin)]
    high = sample[min(m - 1, int(centre) + 1 + margin)]
    below = int(torch.count_nonzero(w < low))
    band = w[(w >= low) & (w <= high)]
    if below <= rank < below + band.numel():
        return torch.kthvalue(band, rank - below + 1).values
    return torch.kthvalue(w, rank + 1).values


def _stock_order_prefix(w: torch.Tensor, k: int, descending: bool) -> torch.Tensor | None:
    """Entries stock's sort of ``w`` puts at positions ``< k`` (CPU replay), or ``None`` to call stock."""
    if not replay_matches_torch():
        return None
    return leading_mask(w, k, descending)


def _take_tied(keep: torch.Tensor, eq: torch.Tensor, first: int, count: int) -> None:
    """Set ``keep`` at the tied entries (``eq``) with tie-positions ``[first, first + count)``, in index order."""
    if count <= 0:
        return
    idx = eq.nonzero().squeeze(1)
    keep[idx[first : first + count]] = True


def _ambiguous(value: torch.Tensor, n_tied: int, n_taken: int) -> bool:
    """A boundary tie whose resolution could change the output (non-zero value, only some taken)."""
    return 0 < n_taken < n_tied and bool(value != 0)


def _rank_window_mask(w: torch.Tensor, lo: int, hi: int, stable_ties: bool) -> torch.Tensor | None:
    """Boolean mask of entries with ascending rank in ``[lo, hi)``; ``None`` when stock's tie order matters."""
    v_lo = _kth_smallest(w, lo)
    v_hi = _kth_smallest(w, hi - 1) if hi - 1 != lo else v_lo
    keep = (w >= v_lo) & (w <= v_hi)
    if int(torch.count_nonzero(keep)) == hi - lo:  # no tie straddles a boundary: the set is value-defined
        return keep
    keep = (w > v_lo) & (w < v_hi)
    boundary = [v_lo] if bool(v_lo == v_hi) else [v_lo, v_hi]
    for value in boundary:
        eq = w == value
        n_tied = int(torch.count_nonzero(eq))
        below = int(torch.count_nonzero(w < value))  # the tied entries hold ranks below .. below + n_tied - 1
        first = max(lo, below) - below
        last = min(hi, below + n_tied) - below
        if not stable_ties and _ambiguous(value, n_tied, last - first):
            return None
        _take_tied(keep, eq, first, last - first)
    return keep


def _apply(tensor: torch.Tensor, keep: torch.Tensor, rescale_norm) -> torch.Tensor:
    from mergekit.sparsify import rescaled_masked_tensor

    # x * True == x * 1.0 and x * False == x * 0.0 (signed zeros included): the values stock's float mask gives
    return rescaled_masked_tensor(tensor, keep.reshape(tensor.shape), rescale_norm)


def magnitude(tensor: torch.Tensor, density: float, rescale_norm=None) -> torch.Tensor:
    """Drop-in for ``mergekit.sparsify.magnitude``: keep the ``max(1, int(density * n))`` largest ``|x|``."""
    if density >= 1 or density <= 0 or tensor.numel() == 0 or tensor.device.type != "cpu":
        return _stock("magnitude")(tensor, density, rescale_norm)
    stable_ties = tie_mode() == "index"
    n = tensor.numel()
    k = max(1, int(density * n))
    w = _magnitudes(tensor)
    if not _finite(w):
        fallbacks["magnitude"] += 1
        return _stock("magnitude")(tensor, density, rescale_norm)
    t = _kth_smallest(w, n - k)
    keep = w >= t
    n_keep = int(torch.count_nonzero(keep))
    if n_keep == k:  # t is not shared by a dropped entry: the kept set is value-defined
        return _apply(tensor, keep, rescale_norm)
    eq = w == t
    n_tied = int(torch.count_nonzero(eq))
    need = k - (n_keep - n_tied)
    if not stable_ties and _ambiguous(t, n_tied, need):
        keep = _stock_order_prefix(w, k, descending=True)
        if keep is None:
            fallbacks["magnitude"] += 1
            return _stock("magnitude")(tensor, density, rescale_norm)
        replays["magnitude"] += 1
        return _apply(tensor, keep, rescale_norm)
    keep = w > t
    _take_tied(keep, eq, 0, need)  # descending stable order: lowest index first among ties
    return _apply(tensor, keep, rescale_norm)


def magnitude_outliers(tensor: torch.Tensor, density: float, rescale_norm=None, gamma: float = 0.01):
    """Drop-in for ``mergekit.sparsify.magnitude_outliers``: drop the ``gamma`` largest, then the smallest."""
    num = tensor.numel()
    target_n = int(density * num) if density < 1 else 0
    if density >= 1 or num == 0 or target_n <= 0 or tensor.device.type != "cpu":
        return _stock("magnitude_outliers")(tensor, density, rescale_norm, gamma)
    stable_ties = tie_mode() == "index"
    n_bot = max(0, num - target_n - int(gamma * num))
    w = _magnitudes(tensor)
    keep = None
    if _finite(w):
        keep = _rank_window_mask(w, n_bot, n_bot + target_n, stable_ties)
        if keep is None:  # an ambiguous tie at a boundary: replay stock's ascending sort
            upto = _stock_order_prefix(w, n_bot + target_n, descending=False)
            below = _stock_order_prefix(w, n_bot, descending=False) if upto is not None else None
            if below is not None:
                replays["magnitude_outliers"] += 1
                keep = upto & ~below
    if keep is None:
        fallbacks["magnitude_outliers"] += 1
        return _stock("magnitude_outliers")(tensor, density, rescale_norm, gamma)
    return _apply(tensor, keep, rescale_norm)


def della_magprune(tensor: torch.Tensor, density: float, epsilon: float, rescale_norm=None) -> torch.Tensor:
    """Drop-in for ``mergekit.sparsify.della_magprune`` with one sort instead of two (ranks by scatter)."""
    out_of_range = density >= 1 or density <= 0 or density + epsilon >= 1 or density - epsilon <= 0
    if out_of_range or tensor.device.type != "cpu":
        return _stock("della_magprune")(tensor, density, epsilon, rescale_norm)
    from mergekit.sparsify import rescaled_masked_tensor

    orig_shape = tensor.shape
    work_dtype = tensor.dtype if tensor.device.type != "cpu" or tensor.dtype == torch.bfloat16 else torch.float32
    if tensor.dim() < 2:
        tensor = tensor.unsqueeze(0)
    sorted_indices = torch.argsort(tensor.abs(), dim=1, descending=False)  # the very call stock makes
    inverse = torch.empty_like(sorted_indices)
    view = [1] * sorted_indices.dim()  # stock ranks along dim 1 of tensors of any rank (conv weights are 4-D)
    view[1] = sorted_indices.shape[1]
    positions = torch.arange(view[1], device=sorted_indices.device).view(view).expand_as(sorted_indices)
    inverse.scatter_(1, sorted_indices, positions)  # == sorted_indices.argsort(dim=1): a permutation has no ties
    ranks = inverse.to(work_dtype) + 1
    min_ranks = ranks.min(dim=1, keepdim=True).values
    max_ranks = ranks.max(dim=1, keepdim=True).values
    span = max_ranks - min_ranks
    # A row of one element (a (1, 1) scale, a 1-channel conv) has no rank spread: stock divides 0 by 0 and
    # torch.bernoulli raises on the NaN. Such an element keeps the mean probability, `density` (rank_norm 0.5).
    # Elsewhere span >= 1, so the clamp leaves stock's arithmetic, and its bits, unchanged.
    rank_norm = ((ranks - min_ranks) / span.clamp_min(1)).clamp(0, 1)
    rank_norm = torch.where(span > 0, rank_norm, torch.full_like(rank_norm, 0.5))
    probs = (density - epsilon) + rank_norm * 2 * epsilon
    mask = torch.bernoulli(probs).to(work_dtype)
    res = rescaled_masked_tensor(tensor.to(work_dtype), mask, rescale_norm)
    return res.to(tensor.dtype).reshape(orig_shape)


_FAST = {"magnitude": magnitude, "magnitude_outliers": magnitude_outliers, "della_magprune": della_magprune}


def install() -> None:
    """Swap the fast kernels into ``mergekit.sparsify`` (idempotent; stock ones kept for fallback)."""
    import mergekit.sparsify as sp

    for name in _KERNELS:
        current = getattr(sp, name)
        if current is _FAST[name]:
            continue
        _STOCK[name] = current
        _FAST[name].__wrapped__ = current
        setattr(sp, name, _FAST[name])


def uninstall() -> None:
    """Put the stock kernels back (tests and benchmarks compare both in one process)."""
    import mergekit.sparsify as sp

    for name, fn in _STOCK.items():
        setattr(sp, name, fn)
