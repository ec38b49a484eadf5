"""Import an Effort checkpoint (Yan et al., ICML 2025: orthogonal SVD residual fine-tuning of CLIP).

Effort trains a DeepfakeBench-style detector whose attention linears (q/k/v/out projections) are stored as a
frozen principal part plus a trainable residual: ``weight_main`` (out, in), ``U_residual`` (out, r),
``S_residual`` (r,) and ``V_residual`` (r, in), with the effective weight
``W = weight_main + U_residual @ diag(S_residual) @ V_residual``. We fold each into a plain ``weight`` (in
float64, rounded once to the storage dtype), then import as a DeepfakeBench detector. Scalar ``*_fnorm``
buffers that sit beside the residual (norm bookkeeping for the training loss) are dropped.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

from mergekit_clip.convert.base import ConversionError, Converted, ImportOptions, ImportReport, load_weights_file
from mergekit_clip.convert.deepfakebench import convert_pooled_detector

_PARTS = ("weight_main", "U_residual", "S_residual", "V_residual")


def fold_svd_residuals(state: dict[str, torch.Tensor], report: ImportReport) -> dict[str, torch.Tensor]:
    """Replace every ``weight_main`` + U/S/V quadruple by its plain ``weight``; errors name the tensors."""
    source = report.source
    out = dict(state)
    modules = sorted(k[: -len("weight_main")] for k in state if k.endswith(".weight_main"))
    orphans = sorted(
        k for k in state if k.rsplit(".", 1)[-1] in _PARTS[1:] and k.rsplit(".", 1)[0] + "." not in modules
    )
    if orphans:
        raise ConversionError(f"{source}: SVD residual tensors without a weight_main: {orphans[:8]}")
    for base in tqdm(modules, desc="folding SVD residuals", unit="linear", disable=None):
        missing = [base + p for p in _PARTS if base + p not in state]
        if missing:
            raise ConversionError(f"{source}: incomplete SVD residual linear: missing {missing}")
        main, u, s, v = (out.pop(base + p) for p in _PARTS)
        if base + "weight" in out:
            raise ConversionError(f"{source}: {base}weight and {base}weight_main both present")
        r = s.shape[0] if s.ndim == 1 else -1
        if main.ndim != 2 or u.shape != (main.shape[0], r) or v.shape != (r, main.shape[1]):
            raise ConversionError(
                f"{source}: {base}*: shapes weight_main {tuple(main.shape)}, U {tuple(u.shape)}, S {tuple(s.shape)}, "
                f"V {tuple(v.shape)} do not compose (expected (out,in), (out,r), (r,), (r,in))"
            )
        folded = main.double() + (u.double() * s.double()) @ v.double()
        out[base + "weight"] = folded.to(main.dtype)
        fnorms = [k for k in out if k.startswith(base) and k.endswith("_fnorm") and out[k].numel() == 1]
        for k in fnorms:
            out.pop(k)
        if fnorms:
            report.drop("SVD norm buffers", len(fnorms))
    if not modules:
        raise ConversionError(
            f"{source}: no weight_main/U_residual/S_residual/V_residual tensors: not an Effort "
            "checkpoint (try --from deepfakebench)"
        )
    ranks = sorted({int(state[m + "S_residual"].shape[0]) for m in modules})
    report.note(
        f"folded {len(modules)} SVD residual linears (rank(s) {ranks}): "
        "weight = weight_main + U diag(S) V, computed in float64"
    )
    return out


def import_effort(source: Path, options: ImportOptions) -> Converted:
    report = ImportReport("effort", str(source))
    state = fold_svd_residuals(load_weights_file(source), report)
    return convert_pooled_detector(state, options, report)
