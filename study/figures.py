"""The study's figures, each readable at a glance (matplotlib, Agg backend; every function returns the written Path).

- :func:`plot_did_merging_help`: one dot per model (held-out mean AUC) with its bootstrap interval, grouped
  ingredient / soup / merge and sorted within each group, the val-selected ingredient as a vertical line and each
  group's val pick filled (the others hollow: what a test-set pick would have reported instead);
- :func:`plot_val_vs_test`: source-val against test AUC of every merge candidate, one colour per method
  (does selection on val transfer to test?), with the diagonal;
- :func:`plot_param_sweep`: val and test AUC of one method's candidates against one searched parameter;
- :func:`plot_proxy_vs_held_out`: one panel per selection protocol, proxy score against held-out AUC.

Inputs are plain dicts (the study report's rows); a missing key, an unknown kind, a non-finite value or an
interval that does not contain its estimate raises ``ValueError`` naming the row, before anything is drawn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

KINDS = ("ingredient", "soup", "merge")  # drawn top to bottom in this order
_KIND_COLOURS = {"ingredient": "#4C72B0", "soup": "#55A868", "merge": "#C44E52"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: never open a window, work without a display
    import matplotlib.pyplot as plt

    return plt


def _require(rows: Sequence[dict[str, Any]], keys: Sequence[str], what: str) -> None:
    if not rows:
        raise ValueError(f"{what}: no rows to plot")
    for i, row in enumerate(rows):
        missing = [k for k in keys if k not in row]
        if missing:
            raise ValueError(f"{what}: row {i} ({row.get('name', row.get('method', '?'))!r}) lacks {missing} "
                             f"(each row needs {list(keys)})")  # fmt: skip


def _number(row: dict[str, Any], key: str, what: str, label: str) -> float:
    value = row[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what}: {label} has {key}={value!r}, expected a finite number")
    return float(value)


def _save(fig, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130, bbox_inches="tight")
    _pyplot().close(fig)
    return out


def plot_did_merging_help(rows: list[dict], reference: str, out: Path) -> Path:
    """Dot plot of held-out mean AUC with intervals, grouped by kind, the val-selected ingredient as a line.

    ``rows``: ``{"name", "kind": "ingredient" | "soup" | "merge", "estimate", "low", "high"}`` and optionally
    ``"selected": True`` for a model some group picked on source val (drawn filled and labelled; the others hollow);
    ``reference`` is the name of the val-selected ingredient (one of the rows). Within a group the best model is on
    top.
    """
    what = "did-merging-help plot"
    _require(rows, ("name", "kind", "estimate", "low", "high"), what)
    names = [r["name"] for r in rows]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{what}: model names must be unique, repeated: {duplicates}")
    for r in rows:
        if r["kind"] not in KINDS:
            raise ValueError(f"{what}: model {r['name']!r} has kind {r['kind']!r}; choose from {list(KINDS)}")
        est, low, high = (_number(r, k, what, f"model {r['name']!r}") for k in ("estimate", "low", "high"))
        if not low <= est <= high:
            raise ValueError(f"{what}: model {r['name']!r} has estimate {est} outside its interval [{low}, {high}]")
    by_name = {r["name"]: r for r in rows}
    if reference not in by_name:
        raise ValueError(f"{what}: reference {reference!r} is not a row; models: {names}")

    plt = _pyplot()
    ordered: list[tuple[str, dict | None]] = []  # (kind, row or None for a group header gap)
    for kind in KINDS:
        group = sorted((r for r in rows if r["kind"] == kind), key=lambda r: -r["estimate"])
        if group:
            ordered += [(kind, None)] + [(kind, r) for r in group]
    height = 0.32 * len(ordered) + 1.2
    fig, ax = plt.subplots(figsize=(7.5, height))
    ref = by_name[reference]
    ax.axvspan(ref["low"], ref["high"], color="0.85", zorder=0, label=f"{reference} 95 % interval")
    ax.axvline(ref["estimate"], color="0.3", linestyle="--", linewidth=1, zorder=1,
               label=f"val-selected ingredient: {reference} ({ref['estimate']:.3f})")  # fmt: skip
    labels, y_of = [], []
    points: dict[str, list[tuple[float, dict]]] = {kind: [] for kind in KINDS}
    for position, (kind, row) in enumerate(ordered):
        y = len(ordered) - 1 - position
        if row is None:
            ax.annotate(f"{kind}s", (0.0, y), xycoords=ax.get_yaxis_transform(), xytext=(4, 0),
                        textcoords="offset points", ha="left", va="center", fontweight="bold",
                        color=_KIND_COLOURS[kind])  # fmt: skip
            labels.append("")
        else:
            points[kind].append((y, row))
            ax.annotate(f"{row['estimate']:.3f}", (row["high"], y), xytext=(4, 0), textcoords="offset points",
                        va="center", fontsize=7, color="0.25")  # fmt: skip
            picked = bool(row.get("selected"))
            labels.append(row["name"] + ("  (reference)" if row["name"] == reference else "  \u25c0 val pick" if picked
                                         else ""))
        y_of.append(y)
    for kind, drawn in points.items():  # one error-bar and two marker artists a kind: a figure of 100 models stays fast
        if not drawn:
            continue
        colour = _KIND_COLOURS[kind]
        ys = [y for y, _ in drawn]
        est = [r["estimate"] for _, r in drawn]
        xerr = [[r["estimate"] - r["low"] for _, r in drawn], [r["high"] - r["estimate"] for _, r in drawn]]
        ax.errorbar(est, ys, xerr=xerr, fmt="none", ecolor=colour, capsize=3, zorder=3)
        picked = [bool(r.get("selected")) for _, r in drawn]
        for filled, size in ((True, 36), (False, 25)):
            chosen = [i for i, p in enumerate(picked) if p == filled]
            if chosen:
                ax.scatter([est[i] for i in chosen], [ys[i] for i in chosen], s=size, zorder=4, edgecolors=colour,
                           facecolors=colour if filled else "white", linewidths=1.2)  # fmt: skip
    ax.set_yticks(y_of, labels, fontsize=8)
    ax.set_ylim(-0.7, len(ordered) - 0.3)
    ax.set_xlabel("held-out mean AUC (95 % video-bootstrap interval)")
    ax.set_title("Did merging help? Models right of the dashed line beat the val-selected ingredient\n"
                 "(filled: picked on source val; hollow: other candidates, seen only by a test-set pick)", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    lows, highs = [r["low"] for r in rows], [r["high"] for r in rows]
    pad = max(0.01, 0.08 * (max(highs) - min(lows)))
    ax.set_xlim(min(lows) - pad, max(highs) + 3 * pad)  # room for the value labels
    ax.legend(loc="lower right", fontsize=7, framealpha=0.9)
    return _save(fig, out)


def val_pick(group: Sequence[dict]) -> dict:
    """The candidate of one method that selection picked: the one flagged ``selected`` (the study's tie-break
    decides among equal val scores, which saturate in-domain), else the first with the best val score."""
    flagged = [c for c in group if c.get("selected")]
    return flagged[0] if flagged else max(group, key=lambda c: c["val"])


def plot_val_vs_test(candidates: list[dict], out: Path) -> Path:
    """Scatter of source-val against test AUC of every candidate, one colour per method, with the diagonal.

    ``candidates``: ``{"method", "name", "val", "test"}`` and optionally ``"selected": True`` on the candidate the
    study picked on val (its tie-break decides among equal val scores); without the flag, each method's val-best
    candidate. The pick is ringed: if it is not also among the method's best on test, selection on val did not
    transfer.
    """
    what = "val-vs-test plot"
    _require(candidates, ("method", "name", "val", "test"), what)
    for c in candidates:
        for key in ("val", "test"):
            _number(c, key, what, f"candidate {c['name']!r}")
    plt = _pyplot()
    methods = sorted({c["method"] for c in candidates})
    cmap = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(6.2, 5.2))
    for i, method in enumerate(methods):
        group = [c for c in candidates if c["method"] == method]
        colour = cmap(i % cmap.N)
        ax.scatter([c["val"] for c in group], [c["test"] for c in group], color=colour, s=28, alpha=0.85,
                   label=f"{method} ({len(group)})", zorder=3)  # fmt: skip
        best = val_pick(group)
        ax.scatter([best["val"]], [best["test"]], s=150, facecolors="none", edgecolors=colour, linewidths=1.6,
                   zorder=4)  # fmt: skip
    values = [c[k] for c in candidates for k in ("val", "test")]
    lo, hi = min(values), max(values)
    pad = max(0.01, 0.05 * (hi - lo))
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.6", linestyle=":", linewidth=1, label="val = test")
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel("source val AUC (what selection sees)")
    ax.set_ylabel("held-out test AUC")
    ax.set_title("Does selection on val transfer? (ringed: each method's val pick)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best", framealpha=0.9)
    return _save(fig, out)


def plot_param_sweep(candidates: list[dict], method: str, param: str, out: Path) -> Path:
    """Val and test AUC of ``method``'s candidates against ``param`` (other parameters: one line each).

    ``candidates``: ``{"method", "params": {...}, "val", "test"}``; rows of other methods are ignored. When the
    method searched other parameters too, each combination of them is its own pair of lines.
    """
    what = f"parameter sweep plot of {method}/{param}"
    _require(candidates, ("method", "params", "val", "test"), what)
    rows = [c for c in candidates if c["method"] == method]
    if not rows:
        methods = sorted({c["method"] for c in candidates})
        raise ValueError(f"{what}: no candidate of method {method!r}; methods: {methods}")
    for i, c in enumerate(rows):
        if not isinstance(c["params"], dict) or param not in c["params"]:
            searched = sorted(c["params"]) if isinstance(c["params"], dict) else c["params"]
            raise ValueError(f"{what}: candidate {i} of {method!r} has no parameter {param!r}; it has {searched}")
        _number(c["params"], param, what, f"candidate {i} of {method!r} parameter")
        for key in ("val", "test"):
            _number(c, key, what, f"candidate {i} of {method!r}")

    def others(c: dict) -> tuple:
        return tuple(sorted((k, v) for k, v in c["params"].items() if k != param))

    plt = _pyplot()
    combos = sorted({others(c) for c in rows}, key=str)
    cmap = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, combo in enumerate(combos):
        group = sorted((c for c in rows if others(c) == combo), key=lambda c: c["params"][param])
        xs = [c["params"][param] for c in group]
        suffix = ", ".join(f"{k}={v}" for k, v in combo)
        colour = cmap(i % cmap.N)
        ax.plot(xs, [c["val"] for c in group], "o--", color=colour, alpha=0.8,
                label="val" + (f" ({suffix})" if suffix else ""))  # fmt: skip
        ax.plot(xs, [c["test"] for c in group], "s-", color=colour, label="test" + (f" ({suffix})" if suffix else ""))
    ax.set_xlabel(param)
    ax.set_ylabel("AUC")
    ax.set_title(f"{method}: AUC against {param} (dashed: source val, solid: held-out test)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best", framealpha=0.9, ncol=1 if len(combos) <= 3 else 2)
    return _save(fig, out)


__all__ = ["KINDS", "plot_did_merging_help", "plot_param_sweep", "plot_val_vs_test", "val_pick"]


def plot_proxy_vs_held_out(panels: list[dict], out: Path) -> Path:
    """One panel per selection protocol: each model's proxy score against its held-out mean AUC.

    ``panels``: ``{"protocol", "metric", "transductive", "tau", "regret", "pick", "points"}`` with ``points`` a list
    of ``{"name", "kind", "proxy", "held_out"}`` (models the protocol does not score are left out). The
    protocol's overall pick is ringed, the oracle (best held-out) marked with a star; the title carries tau and
    the regret."""
    what = "proxy-vs-held-out plot"
    _require(panels, ("protocol", "metric", "points", "pick"), what)
    plt = _pyplot()
    n = len(panels)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.3 * cols, 3.8 * rows), squeeze=False, layout="constrained")
    for ax, panel in zip(axes.ravel(), panels):
        points = [p for p in panel["points"] if p["proxy"] is not None and math.isfinite(p["proxy"])]
        for p in points:
            _number(p, "held_out", what, f"model {p['name']!r}")
        for kind in KINDS:
            mine = [p for p in points if p["kind"] == kind]
            if mine:
                ax.scatter([p["proxy"] for p in mine], [p["held_out"] for p in mine], s=20, alpha=0.8,
                           color=_KIND_COLOURS[kind], label=kind, zorder=3)  # fmt: skip
        pick = [p for p in points if p["name"] == panel["pick"]]
        if pick:
            ax.scatter([pick[0]["proxy"]], [pick[0]["held_out"]], s=160, facecolors="none", edgecolors="black",
                       linewidths=1.5, zorder=4, label="pick")  # fmt: skip
        if points:
            top = max(points, key=lambda p: p["held_out"])
            ax.scatter([top["proxy"]], [top["held_out"]], marker="*", s=140, color="gold", edgecolors="black",
                       linewidths=0.6, zorder=5, label="oracle")  # fmt: skip
        tau, regret = panel.get("tau"), panel.get("regret")
        stats = []
        if tau is not None:
            stats.append(f"tau {tau:+.2f}")
        if regret is not None:
            stats.append(f"regret {regret:.3f}")
        mark = " (transductive)" if panel.get("transductive") else ""
        ax.set_title(f"{panel['protocol']}{mark}\n{', '.join(stats)}", fontsize=9)
        ax.set_xlabel(f"proxy: {panel['metric']} (higher = better)", fontsize=8)
        ax.set_ylabel("held-out mean frame AUC", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=7, loc="best", framealpha=0.9)
    fig.suptitle("Does the selection proxy track held-out AUC? (one dot per model)", fontsize=10)
    return _save(fig, out)
