"""How well does a selection protocol's proxy score predict held-out performance?

Across every model a protocol scores, with the held-out mean frame AUC (the mean over the held-out test sets):

- Kendall's tau-b and Spearman's rho between proxy score and held-out AUC;
- the regret: the best held-out AUC of any model (the oracle) minus that of the protocol's pick (its highest proxy
  score, ties broken as selection breaks them);
- within groups (one method's grid, the ingredients): the mean regret of each group's pick and how often the pick
  is the group's oracle; where val saturates, this is where selection goes wrong.

Intervals come from the study's video bootstrap (``eval.bootstrap.resampled_auc``: the same draws as every other
interval of the study, so all models and protocols are resampled together): the proxy scores stay fixed, the
held-out AUCs are recomputed on each resample, and tau, rho and regret with them; percentile intervals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n along the last axis, ties sharing their mean rank (scipy's ``rankdata(method='average')``)."""
    v = np.asarray(values, dtype=np.float64)
    below = (v[..., None, :] < v[..., :, None]).sum(-1)
    equal = (v[..., None, :] == v[..., :, None]).sum(-1)
    return below + (equal + 1) / 2


def kendall_tau_b(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of ``x`` (n,) against each row of ``y`` (n,) or (R, n); NaN when either is constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    sx = np.sign(x[:, None] - x[None, :])
    sy = np.sign(y[..., :, None] - y[..., None, :])
    concordant = (sx * sy).sum((-1, -2))
    denom = np.sqrt(np.abs(sx).sum() * np.abs(sy).sum((-1, -2)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, concordant / np.where(denom > 0, denom, 1), np.nan)


def spearman_rho(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho (Pearson's r of average ranks) of ``x`` (n,) against each row of ``y``; NaN when constant."""
    rx = average_ranks(x)
    ry = average_ranks(y)
    rx = rx - rx.mean()
    ry = ry - ry.mean(-1, keepdims=True)
    denom = np.sqrt((rx**2).sum() * (ry**2).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (ry * rx).sum(-1) / np.where(denom > 0, denom, 1), np.nan)


def _interval(estimate: float, samples: np.ndarray, confidence: float) -> dict[str, float | None]:
    samples = samples[np.isfinite(samples)]
    if not math.isfinite(estimate) or samples.size == 0:
        return {"estimate": None if not math.isfinite(estimate) else estimate, "low": None, "high": None}
    alpha = (1 - confidence) / 2
    low, high = np.quantile(samples, [alpha, 1 - alpha])
    return {"estimate": float(estimate), "low": float(low), "high": float(high)}


def proxy_quality(
    proxy: Mapping[str, float], pick: str, held_out: Mapping[str, float], resampled: Mapping[str, np.ndarray],
    confidence: float = 0.95,
) -> dict[str, Any]:
    """tau, rho and regret of one protocol over the models with a finite proxy score.

    ``pick`` is the protocol's overall choice; ``held_out[m]`` the observed held-out AUC of model ``m`` and
    ``resampled[m]`` its (n_boot,) values on the shared resamples."""
    names = [m for m, v in proxy.items() if v is not None and math.isfinite(v)]
    if len(names) < 2:
        return {"models": len(names), "pick": pick, "kendall_tau": None, "spearman_rho": None, "regret": None}
    x = np.array([proxy[m] for m in names])
    observed = np.array([held_out[m] for m in names])
    boot = np.stack([resampled[m] for m in names], axis=1)  # (n_boot, models)
    i = names.index(pick)
    regret_boot = boot.max(1) - boot[:, i]
    return {
        "models": len(names),
        "pick": pick,
        "pick_held_out": float(observed[i]),
        "oracle": names[int(np.argmax(observed))],
        "oracle_held_out": float(observed.max()),
        "kendall_tau": _interval(float(kendall_tau_b(x, observed)), kendall_tau_b(x, boot), confidence),
        "spearman_rho": _interval(float(spearman_rho(x, observed)), spearman_rho(x, boot), confidence),
        "regret": _interval(float(observed.max() - observed[i]), regret_boot, confidence),
    }


def group_regret(
    members: Mapping[str, Sequence[str]], picks: Mapping[str, str], proxy: Mapping[str, float],
    held_out: Mapping[str, float], resampled: Mapping[str, np.ndarray], confidence: float = 0.95,
) -> dict[str, Any]:
    """Selection within each group (a method's grid, the ingredients, a soup): the mean over groups of (best
    held-out AUC among the group's scored models minus the pick's), with its interval on the shared resamples,
    and in how many groups the pick is the oracle. Groups with fewer than two scored models choose nothing and
    are left out, as are the "any merge" / "any soup" unions (their members are counted in their own groups)."""
    out, _ = _group_regret(members, picks, proxy, held_out, resampled, confidence)
    return out


def _group_regret(members, picks, proxy, held_out, resampled, confidence):
    """:func:`group_regret` and its per-resample mean regret (None without a group)."""
    from study.selection import ALL_MERGES, ALL_SOUPS

    regrets, boots, hits = [], [], 0
    for group, names in members.items():
        scored = [m for m in names if proxy.get(m) is not None and math.isfinite(proxy[m])]
        if group in (ALL_MERGES, ALL_SOUPS) or len(scored) < 2 or picks.get(group) not in scored:
            continue
        observed = np.array([held_out[m] for m in scored])
        boot = np.stack([resampled[m] for m in scored], axis=1)
        i = scored.index(picks[group])
        regrets.append(observed.max() - observed[i])
        boots.append(boot.max(1) - boot[:, i])
        hits += int(observed[i] == observed.max())
    if not regrets:
        return {"groups": 0, "oracle_picks": 0, "mean_regret": None}, None
    samples = np.mean(boots, axis=0)
    return {"groups": len(regrets), "oracle_picks": hits,
            "mean_regret": _interval(float(np.mean(regrets)), samples, confidence)}, samples  # fmt: skip


def compare_protocols(
    a: Mapping[str, float], b: Mapping[str, float], held_out: Mapping[str, float],
    resampled: Mapping[str, np.ndarray], confidence: float = 0.95, within: tuple | None = None,
) -> dict[str, Any]:
    """Protocol ``a`` against ``b`` on the same resamples: the difference of Kendall tau over the models both score,
    and (``within`` = (members, picks_a, picks_b)) of the mean within-group regret; an interval off 0 separates
    the two proxies beyond the noise of the held-out sets."""
    names = [m for m in a if _finite(a.get(m)) and _finite(b.get(m))]
    out: dict[str, Any] = {"models": len(names)}
    if len(names) >= 2:
        observed = np.array([held_out[m] for m in names])
        boot = np.stack([resampled[m] for m in names], axis=1)
        xa, xb = np.array([a[m] for m in names]), np.array([b[m] for m in names])
        estimate = float(kendall_tau_b(xa, observed) - kendall_tau_b(xb, observed))
        out["kendall_tau"] = _interval(estimate, kendall_tau_b(xa, boot) - kendall_tau_b(xb, boot), confidence)
    if within is not None:
        members, picks_a, picks_b = within
        qa, sa = _group_regret(members, picks_a, a, held_out, resampled, confidence)
        qb, sb = _group_regret(members, picks_b, b, held_out, resampled, confidence)
        if sa is not None and sb is not None:
            estimate = qa["mean_regret"]["estimate"] - qb["mean_regret"]["estimate"]
            out["within_group_regret"] = _interval(estimate, sa - sb, confidence)
    return out


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


def overall_pick(names: Sequence[str], proxy: Mapping[str, float], ties: Mapping[str, float] | None) -> str:
    """The protocol's choice over every model it scores (ties broken as selection breaks them)."""
    from study.selection import best

    return best([n for n in names if proxy[n] is not None and math.isfinite(proxy[n])] or list(names), proxy, ties)
