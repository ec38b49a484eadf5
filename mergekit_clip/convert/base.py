"""Shared pieces of every import: options, the mapping report, safe weight loading and the final write.

An importer turns a source into a :class:`Converted`: a :class:`~mergekit_clip.detector.spec.DetectorSpec`, tensors
already under our names (``visual.*``, ``head.*``) and a :class:`ImportReport`. :func:`write_converted` then
checks the tensors against the spec (every name, every shape) before a single byte is written, and saves
through :func:`~mergekit_clip.detector.io.save_detector`, which is atomic.
"""

from __future__ import annotations

import os
import re
import warnings
import zipfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from mergekit_clip.detector.io import DetectorFormatError, compare_tensors, save_detector
from mergekit_clip.detector.labels import normalize_labels
from mergekit_clip.detector.spec import DetectorSpec


class ConversionError(DetectorFormatError):
    """A source that cannot be represented as a detector; the message names the file and the tensors."""


class ImportOptions(BaseModel):
    """Hints and overrides for an import. Tensor shapes always win; these fill in what shapes cannot say."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arch: str | None = Field(
        None, description="open_clip architecture (e.g. ViT-B-16): heads, activation and embed dim from it"
    )
    quick_gelu: bool | None = Field(None, description="QuickGELU activation (OpenAI weights) instead of GELU")
    heads: int | None = Field(None, gt=0, description="attention heads (shapes cannot tell; default width/64)")
    layer_norm_eps: float | None = Field(None, gt=0, description="LayerNorm epsilon (default 1e-5)")
    hf_config: Path | None = Field(
        None, description="Hugging Face CLIP config.json (file or directory) the source was fine-tuned from"
    )
    head: Path | None = Field(None, description="separate head weights file (weight/bias of a linear head)")
    head_key: str | None = Field(None, description="module name of the head in the source (when ambiguous)")
    head_feature: Literal["pooled", "projected", "patch_mean"] | None = Field(
        None, description="feature the head reads (default: inferred from its input width)"
    )
    head_normalize: bool | None = Field(None, description="the head reads the L2-normalised feature")
    labels: tuple[str, ...] | None = Field(None, description="label names of the head rows, in order (real,fake)")
    trust_torchscript: bool = Field(
        False, description="allow OpenAI TorchScript .pt archives (loading them runs TorchScript code)"
    )
    forensics_adapter: Path | None = Field(
        None,
        description="YAML/JSON of forensics_adapter fields a ForensicsAdapter checkpoint cannot tell (heads, depth, "
        "fusion_map, image_size, ...); default: the paper's setting",
    )

    @field_validator("labels", mode="before")
    @classmethod
    def _split_labels(cls, value):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if value is None:
            return None
        return normalize_labels(value, source="--labels")


@dataclass
class ImportReport:
    """What an import did: tensor counts per group, renames/foldings, what was dropped or assumed."""

    kind: str
    source: str
    mapped: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    sha256: str = ""  # of the source weight files, filled in by convert_source

    def note(self, message: str) -> None:
        if message not in self.notes:
            self.notes.append(message)

    def drop(self, group: str, count: int = 1) -> None:
        self.dropped[group] = self.dropped.get(group, 0) + count

    def count_mapped(self, names) -> None:
        self.mapped = dict(sorted(Counter(tensor_group(n) for n in names).items()))

    def lines(self) -> list[str]:
        out = [f"import --from {self.kind}: {self.source}"]
        out.append("mapped: " + ", ".join(f"{g} {n}" for g, n in self.mapped.items()))
        out += [f"  {n}" for n in self.notes]
        if self.dropped:
            out.append(
                "dropped (not part of a vision detector): " + ", ".join(f"{g} {n}" for g, n in self.dropped.items())
            )
        return out

    def as_dict(self) -> dict:
        return asdict(self)  # every field, copied: the provenance must not change with the report


@dataclass
class Converted:
    spec: DetectorSpec
    state: dict[str, torch.Tensor]
    report: ImportReport
    provenance: dict = field(default_factory=dict)


_BLOCK = re.compile(r"^visual\.transformer\.resblocks\.\d+\.(attn|mlp|ln_\d)\.")


def tensor_group(name: str) -> str:
    """Report group of one of our tensor names."""
    if name.startswith(("head.", "adapter.")):
        return name.split(".")[0]
    if name == "visual.proj":
        return "projection"
    m = _BLOCK.match(name)
    if m:
        return {"attn": "attention", "mlp": "mlp"}.get(m.group(1), "block layernorms")
    if name.startswith(("visual.ln_pre", "visual.ln_post")):
        return "pre/post layernorms"
    return "embeddings"


# ---------------------------------------------------------------- loading source tensors

_WRAPPERS = ("state_dict", "model", "model_state_dict", "module", "net")


def is_torchscript(file: Path) -> bool:
    """OpenAI's original ``.pt`` files are TorchScript archives (a zip holding ``constants.pkl`` or ``code/``)."""
    if not zipfile.is_zipfile(file):
        return False
    with zipfile.ZipFile(file) as z:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())


def load_weights_file(file: str | os.PathLike, *, trust_torchscript: bool = False) -> dict[str, torch.Tensor]:
    """Tensors of one weights file: safetensors, or a pickle read with ``weights_only=True``.

    Training checkpoints are unwrapped (``{"state_dict": ...}``, ``{"model": ...}``) and DataParallel's
    ``module.`` prefix is removed. Non-tensor entries (epoch counters, optimiser states) are ignored.
    """
    file = Path(file)
    if not file.is_file():
        raise ConversionError(f"{file}: not a file")
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        from mergekit_clip.detector.io import check_safetensors_file

        check_safetensors_file(file)
        return load_file(str(file))
    if is_torchscript(file):
        if not trust_torchscript:
            raise ConversionError(
                f"{file} is a TorchScript archive (OpenAI's original CLIP .pt). Loading it runs TorchScript code: "
                "pass --trust-torchscript if you trust the file, or convert it to a state dict first"
            )
        with warnings.catch_warnings():  # torch deprecates TorchScript; OpenAI's files still use it
            warnings.simplefilter("ignore", FutureWarning)
            return dict(torch.jit.load(str(file), map_location="cpu").state_dict())
    try:
        loaded = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses arbitrary pickled objects: say so instead of a bare traceback
        raise ConversionError(f"{file}: cannot be read with torch.load(weights_only=True): {e}") from e
    for _ in range(3):
        if isinstance(loaded, dict) and not any(isinstance(v, torch.Tensor) for v in loaded.values()):
            inner = next((loaded[k] for k in _WRAPPERS if isinstance(loaded.get(k), dict)), None)
            if inner is None:
                break
            loaded = inner
    if not isinstance(loaded, dict):
        raise ConversionError(f"{file}: expected a dict of tensors, got {type(loaded).__name__}")
    state = {k: v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise ConversionError(f"{file}: holds no tensors (top-level keys {sorted(map(str, loaded))[:8]})")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def take_head(
    others: dict[str, torch.Tensor], source: str, head_key: str | None, *, allowed: set[str] | None = None
) -> tuple[str | None, dict[str, torch.Tensor]]:
    """Find the linear head among non-backbone tensors: ``(module name, {"weight", "bias"})``.

    A head is a module with a 2-D ``weight`` of 1 or 2 rows and a ``bias``. With ``head_key`` that module is
    required; otherwise exactly one candidate may exist. The head's tensors are removed from ``others``.
    """
    if head_key is None:
        candidates = sorted(
            k[: -len(".weight")]
            for k, v in others.items()
            if k.endswith(".weight")
            and v.ndim == 2
            and v.shape[0] in (1, 2)
            and (allowed is None or k[: -len(".weight")] in allowed)
        )
        if not candidates:
            return None, {}
        if len(candidates) > 1:
            raise ConversionError(f"{source}: several possible heads {candidates}; choose one with --head-key")
        head_key = candidates[0]
    weight, bias = others.pop(f"{head_key}.weight", None), others.pop(f"{head_key}.bias", None)
    if weight is None:
        raise ConversionError(f"{source}: no tensor {head_key}.weight (the head named by --head-key)")
    if weight.ndim != 2 or weight.shape[0] not in (1, 2):
        raise ConversionError(f"{source}: {head_key}.weight has shape {tuple(weight.shape)}; a head is (1 or 2, dim)")
    if bias is None or tuple(bias.shape) != (weight.shape[0],):
        raise ConversionError(
            f"{source}: head {head_key}.weight {tuple(weight.shape)} needs a bias {head_key}.bias of shape "
            f"({weight.shape[0]},), found {None if bias is None else tuple(bias.shape)}"
        )
    return head_key, {"weight": weight, "bias": bias}


def refuse_leftovers(leftover, source: str, what: str) -> None:
    leftover = sorted(leftover)
    if leftover:
        more = f" ... ({len(leftover)} in all)" if len(leftover) > 12 else ""
        raise ConversionError(f"{source}: cannot represent {what}: {leftover[:12]}{more}")


# ---------------------------------------------------------------- writing


def build_model(converted: Converted):
    """A detector holding exactly the converted tensors; any missing, extra or misshapen tensor is an error."""
    source = converted.report.source
    from mergekit_clip.detector.model import build_detector

    with torch.device("meta"):  # every tensor is replaced below: skip the random init (seconds on ViT-L)
        model = build_detector(converted.spec)
    expected = model.state_dict()
    state = converted.state
    missing, wrong = compare_tensors(expected, state, "source", "detector")
    if missing:
        raise ConversionError(f"{source}: missing tensor(s) for the detector: {missing[:12]}")
    refuse_leftovers(set(state) - set(expected), source, "tensors the detector has no place for")
    if wrong:
        raise ConversionError(f"{source}: tensor shapes do not fit the inferred geometry: {wrong[:6]}")
    narrowed = sorted(
        {
            str(state[k].dtype)
            for k, v in expected.items()
            if state[k].dtype != v.dtype and torch.finfo(state[k].dtype).bits > torch.finfo(v.dtype).bits
        }
    )
    if narrowed:
        converted.report.note(f"cast {narrowed} -> float32: values rounded to the nearest float32")
    widened = sorted(
        {
            str(state[k].dtype)
            for k, v in expected.items()
            if state[k].dtype != v.dtype and str(state[k].dtype) not in narrowed
        }
    )
    if widened:
        converted.report.note(f"widened {widened} -> float32 (exact)")
    model.load_state_dict({k: state[k].to(v.dtype).contiguous() for k, v in expected.items()}, strict=True, assign=True)
    converted.report.count_mapped(expected)
    return model.eval()


def write_converted(converted: Converted, out: str | os.PathLike, overwrite: bool = False) -> Path:
    model = build_model(converted)
    provenance = dict(converted.provenance)
    provenance["import"] = converted.report.as_dict()
    return save_detector(model, out, provenance=provenance, overwrite=overwrite)
