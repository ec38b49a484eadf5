"""Detector directories: create, save (atomically), read and load, in our format and Hugging Face CLIP layouts.

A detector directory is ``config.json`` (:class:`~mergekit_clip.detector.spec.DetectorConfig`) + ``model.safetensors``
(or a sharded ``model.safetensors.index.json``). Every writer goes through :func:`atomic_directory`: the
files are written into a hidden temporary sibling that is renamed into place only when complete.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mergekit_clip.detector.card import write_card
from mergekit_clip.detector.layouts import (
    ADAPTER_TENSORS,
    HF_CLIP_ARCHITECTURES,
    HF_PREPROCESSOR_FILE,
    HF_PROJECTION,
    carried_tensor_names,
    hf_vision_to_open_clip,
    strip_vision_prefix,
)
from mergekit_clip.detector.layouts import spec_from_hf_config as _spec_from_hf
from mergekit_clip.detector.spec import (
    ARCHITECTURE,
    MODEL_TYPE,
    DetectorConfig,
    DetectorSpec,
)
from mergekit_clip.digest import files_sha256
from mergekit_clip.outputs import atomic_directory  # noqa: F401  (the one output-folder writer)
from mergekit_clip.structured import StructuredFileError, parse_json, read_json

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"


class DetectorFormatError(ValueError):
    """A directory or file that is not a valid detector (the message names the file and field)."""


def weight_files(path: str | os.PathLike) -> list[Path]:
    """The tensor files of a model directory (safetensors preferred, then PyTorch ``.bin``)."""
    path = Path(path)
    if not path.is_dir():
        raise DetectorFormatError(f"{path} is not a directory")
    index = path / INDEX_NAME
    if index.exists():
        try:
            weight_map = read_json(index)["weight_map"]
            shards = sorted(set(weight_map.values()))
            if not all(isinstance(s, str) and s and Path(s).name == s for s in shards):
                raise ValueError("shard names must be plain file names")
        except (StructuredFileError, KeyError, TypeError, AttributeError, ValueError) as e:
            raise DetectorFormatError(f"{index}: not a safetensors index ({e})") from e
        return [path / s for s in shards]
    if (path / WEIGHTS_NAME).exists():
        return [path / WEIGHTS_NAME]
    found = sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
    if not found:
        raise DetectorFormatError(
            f"{path} holds no weights (expected {WEIGHTS_NAME}, {INDEX_NAME} or pytorch_model.bin)"
        )
    return found


def check_safetensors_file(file: str | os.PathLike) -> dict:
    """Parse a safetensors header and check that the file is as long as the header says.

    Returns the header (tensor name -> dtype/shape/offsets). A truncated or corrupt file raises
    :class:`DetectorFormatError` naming it; this costs one small read, not a pass over the data.
    """
    file = Path(file)
    size = file.stat().st_size
    with open(file, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise DetectorFormatError(f"{file}: truncated safetensors file ({size} bytes, no header)")
        (header_len,) = struct.unpack("<Q", raw)
        if header_len > size - 8:
            raise DetectorFormatError(f"{file}: truncated safetensors file (header needs {header_len} bytes)")
        try:
            header = parse_json(f.read(header_len), str(file))
            end = max((_tensor_end(k, v) for k, v in header.items() if k != "__metadata__"), default=0)
            meta = header.get("__metadata__", {})
            if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
                raise ValueError("__metadata__ must map names to strings")
        except (StructuredFileError, AttributeError, TypeError, ValueError, KeyError, IndexError) as e:
            raise DetectorFormatError(f"{file}: corrupt safetensors header ({e})") from e
    if 8 + header_len + end > size:
        raise DetectorFormatError(
            f"{file}: truncated safetensors file ({size} bytes on disk, header describes {8 + header_len + end})"
        )
    return header


# bytes per value of each safetensors dtype
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
               "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}  # fmt: skip


def _tensor_end(name: str, info: dict) -> int:
    """Where a header entry's bytes end; its dtype, shape and offsets must agree (what safetensors would refuse
    later with a message that does not name the file)."""
    dtype, shape, (start, end) = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"tensor {name}: unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in [*shape, start, end]):
        raise ValueError(f"tensor {name}: bad shape {shape!r} or offsets {[start, end]}")
    count = 1
    for n in shape:
        count *= n
    if end - start != count * DTYPE_BYTES[dtype]:
        raise ValueError(f"tensor {name}: {end - start} bytes do not hold {count} {dtype} values")
    return end


def read_state_dict(path: str | os.PathLike, device: str = "cpu") -> dict[str, torch.Tensor]:
    """All tensors of a model directory or a single weights file (``.safetensors``, ``.pth``/``.bin``)."""
    path = Path(path)
    files = weight_files(path) if path.is_dir() else [path]
    state: dict[str, torch.Tensor] = {}
    for file in files:
        if file.suffix == ".safetensors":
            check_safetensors_file(file)
            with safe_open(str(file), framework="pt", device=device) as f:
                for key in f.keys():
                    state[key] = f.get_tensor(key)
        else:
            try:
                loaded = torch.load(file, map_location=device, weights_only=True)
            except Exception as e:  # noqa: BLE001  (pickle, zip and torch errors alike: the file is unusable)
                raise DetectorFormatError(
                    f"{file}: not a PyTorch weights file this tool can load safely ({type(e).__name__}: "
                    f"{str(e).splitlines()[0][:200] if str(e) else 'unreadable'})"
                ) from e
            if isinstance(loaded, dict) and "state_dict" in loaded and isinstance(loaded["state_dict"], dict):
                loaded = loaded["state_dict"]
            if not isinstance(loaded, dict):
                raise DetectorFormatError(f"{file}: expected a dict of tensors, got {type(loaded).__name__}")
            state.update(loaded)
    return state


def check_finite_weights(path: str | os.PathLike) -> None:
    """Refuse a model directory with a NaN/Inf in any floating tensor (the merge path's input check).

    Reads one tensor at a time; a finite sum (one reduction) proves a tensor finite, so the element-wise
    test runs only on the rare tensor whose sum overflowed or is NaN.
    """
    for file in weight_files(path):
        if file.suffix == ".safetensors":
            check_safetensors_file(file)
            with safe_open(str(file), framework="pt", device="cpu") as f:
                items = ((key, f.get_tensor(key)) for key in f.keys())
                _raise_on_nonfinite(path, items)
        else:
            _raise_on_nonfinite(path, read_state_dict(file).items())


def _raise_on_nonfinite(path, items) -> None:
    for key, tensor in items:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor.sum())):
            if not bool(torch.isfinite(tensor).all()):
                raise DetectorFormatError(f"{path}: tensor {key} has NaN/Inf values")


def weights_hash(path: str | os.PathLike) -> str:
    """SHA-256 over the weight files of a model directory (provenance in reports)."""
    return files_sha256(weight_files(path))


# ---------------------------------------------------------------- config discovery


def read_config_json(path: str | os.PathLike) -> dict:
    file = Path(path) / "config.json"
    if not file.exists():
        raise DetectorFormatError(f"{path} has no config.json: not a detector or CLIP model directory")
    try:
        cfg = read_json(file)
    except StructuredFileError as e:
        raise DetectorFormatError(str(e)) from e
    if not isinstance(cfg, dict):
        raise DetectorFormatError(f"{file}: expected a JSON object, got {type(cfg).__name__}")
    return cfg


def model_layout(cfg: dict) -> str:
    """``clip_detector`` for our format, else the HF architecture name; raises for anything else."""
    if cfg.get("model_type") == MODEL_TYPE:
        return ARCHITECTURE
    arch = (cfg.get("architectures") or [None])[0]
    if arch in HF_CLIP_ARCHITECTURES:
        return arch
    raise DetectorFormatError(
        f"unsupported model: model_type={cfg.get('model_type')!r}, architectures={cfg.get('architectures')}; "
        f"expected {MODEL_TYPE!r} or one of {list(HF_CLIP_ARCHITECTURES)}"
    )


def spec_from_hf_config(cfg: dict, path: str | os.PathLike | None = None) -> DetectorSpec:
    """Detector spec of an HF CLIP directory (see :func:`mergekit_clip.detector.layouts.spec_from_hf_config`)."""
    source = str(Path(path) / "config.json") if path is not None else "config.json"
    processor = None
    if path is not None and (Path(path) / HF_PREPROCESSOR_FILE).exists():
        file = Path(path) / HF_PREPROCESSOR_FILE
        try:
            processor = read_json(file)
        except StructuredFileError as e:
            raise DetectorFormatError(str(e)) from e
    try:
        return _spec_from_hf(cfg, processor, source)
    except ValueError as e:
        raise DetectorFormatError(str(e) if source in str(e) else f"{source}: {e}") from e


def detector_spec(path: str | os.PathLike) -> DetectorSpec:
    """The spec of any supported directory, without reading weights."""
    cfg = read_config_json(path)
    layout = model_layout(cfg)
    if layout == ARCHITECTURE:
        try:
            return DetectorConfig.from_dict(cfg).spec
        except ValueError as e:
            raise DetectorFormatError(f"{Path(path) / 'config.json'}: {e}") from e
    return spec_from_hf_config(cfg, path)


# ---------------------------------------------------------------- build / save / load


def create_detector(spec: DetectorSpec, seed: int | None = 0):
    """A detector with random weights (seeded), built from a spec."""
    from mergekit_clip.detector.model import build_detector

    if seed is None:
        return build_detector(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_detector(spec)


def compare_tensors(
    expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], found_as: str, expected_as: str, prefix: str = ""
) -> tuple[list[str], list[str]]:
    """``(missing names, shape mismatches)`` of ``found`` against ``expected``: the one check every loader and the
    importer make before ``load_state_dict``. A mismatch reads ``<prefix>name: <found_as> (..) vs <expected_as> (..)``.
    """
    missing = sorted(set(expected) - set(found))
    wrong = [
        f"{prefix}{k}: {found_as} {tuple(found[k].shape)} vs {expected_as} {tuple(v.shape)}"
        for k, v in expected.items()
        if k in found and found[k].shape != v.shape
    ]
    return missing, wrong


def load_pretrained_backbone(model, file: str | os.PathLike) -> list[str]:
    """Load an open_clip / OpenAI weights file (whole CLIP or visual tower only) into ``model.visual``.

    Returns the names of the visual tensors loaded. Shape mismatches and missing tensors raise
    :class:`DetectorFormatError` naming them, before anything is modified.
    """
    state = read_state_dict(file)
    if any(k.startswith("vision_model.") or k.startswith("embeddings.") for k in state):
        state = hf_vision_to_open_clip(state, model.spec.backbone.layers)
    visual = {k[len("visual.") :]: v for k, v in state.items() if k.startswith("visual.")}
    if not visual:
        visual = dict(state)  # a bare visual-tower state dict
    expected = model.visual.state_dict()
    missing, wrong = compare_tensors(expected, visual, "file", "model", prefix="visual.")
    if missing:
        raise DetectorFormatError(f"{file}: missing visual tensors {missing[:8]}{' ...' if len(missing) > 8 else ''}")
    if wrong:
        raise DetectorFormatError(f"{file} does not fit the architecture: {wrong[:6]}")
    model.visual.load_state_dict({k: visual[k] for k in expected}, strict=True)
    return [f"visual.{k}" for k in expected]


def save_detector(
    model,
    path: str | os.PathLike,
    provenance: dict | None = None,
    overwrite: bool = False,
    write_extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``config.json`` + ``model.safetensors`` + a model card (``README.md``) atomically; returns the directory.

    ``write_extra(tmp)`` adds more files to the folder before it is published (a training mode's factors), so
    they appear together with the weights or not at all."""
    config = DetectorConfig.from_spec(model.spec, provenance=provenance)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_directory(path, overwrite=overwrite) as tmp:
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        config.save_pretrained(str(tmp))
        write_card(tmp, model.spec, provenance or {})
        if write_extra is not None:
            write_extra(tmp)
    return Path(path)


def open_clip_state_dict(path: str | os.PathLike, spec: DetectorSpec, cfg: dict) -> dict[str, torch.Tensor]:
    """Weights of any supported directory, mapped to our tensor names."""
    state = read_state_dict(path)
    if model_layout(cfg) == ARCHITECTURE:
        return state
    try:
        out = hf_vision_to_open_clip(state, spec.backbone.layers)
    except KeyError as e:
        raise DetectorFormatError(f"{path}: {e.args[0]}") from e
    top = strip_vision_prefix(state)
    if HF_PROJECTION in top:
        out["visual.proj"] = top[HF_PROJECTION].t().contiguous()
    if spec.forensics_adapter is not None:
        for key in carried_tensor_names(spec):
            if key not in top:
                raise DetectorFormatError(f"{path}: missing ForensicsAdapter tensor {key}")
            out[key] = top[key]
        return out
    if spec.head is not None:
        src = "classifier" if "classifier.weight" in top and not cfg.get("detector_head") else "head"
        for kind in ("weight", "bias"):
            if f"{src}.{kind}" not in top:
                raise DetectorFormatError(f"{path}: missing tensor {src}.{kind}")
            out[f"head.{kind}"] = top[f"{src}.{kind}"]
    for key in ADAPTER_TENSORS:
        if key in top:
            out[key] = top[key]
    return out


def load_detector(path: str | os.PathLike, device: str | torch.device = "cpu", require_head: bool = True):
    """Load a detector from our format or an HF CLIP directory, in eval mode."""
    from mergekit_clip.detector.model import build_detector

    cfg = read_config_json(path)
    spec = detector_spec(path)
    if require_head and spec.head is None:
        raise DetectorFormatError(f"{path} has no forensic head: it is a bare backbone, not a detector")
    if spec.forensics_adapter is None and spec.preprocess.image_size != spec.backbone.image_size:
        raise DetectorFormatError(  # the tower's position embedding is fixed: scoring would fail far from here
            f"{Path(path) / 'config.json'}: preprocess.image_size {spec.preprocess.image_size} differs from "
            f"backbone.image_size {spec.backbone.image_size}"
        )
    expected = expected_tensors(spec)  # shapes only: nothing is allocated before the weights agree with them
    if model_layout(cfg) == ARCHITECTURE:
        check_header_shapes(path, expected)
    state = open_clip_state_dict(path, spec, cfg)
    if "visual.proj" not in state and "visual.proj" in expected:
        # HF vision models without a projection: `pooled`/`patch_mean` heads never read visual.proj.
        if spec.head is not None and spec.head.feature == "projected":
            raise DetectorFormatError(f"{path}: head uses projected features but there is no projection")
        state["visual.proj"] = torch.zeros(expected["visual.proj"].shape)  # never read by these heads
    missing, wrong = compare_tensors(expected, state, "file", "config")
    if missing:
        raise DetectorFormatError(f"{path}: missing tensor(s) {missing[:8]}")
    unexpected = sorted(set(state) - set(expected))
    if unexpected and model_layout(cfg) == ARCHITECTURE:
        raise DetectorFormatError(f"{path}: unexpected tensor(s) {unexpected[:8]}")
    if wrong:
        raise DetectorFormatError(f"{path}: tensors do not match config.json: {wrong[:6]}")
    loaded = {k: state[k].to(v.dtype) for k, v in expected.items()}
    _raise_on_nonfinite(path, loaded.items())  # a NaN weight would surface as NaN scores far from its cause
    model = build_detector(spec)
    model.load_state_dict(loaded, strict=True)
    return model.to(device).eval()


def expected_tensors(spec: DetectorSpec) -> dict[str, torch.Tensor]:
    """The state dict ``spec`` describes, on the meta device (shapes and dtypes, no memory)."""
    from mergekit_clip.detector.model import build_detector

    with torch.device("meta"):
        return build_detector(spec).state_dict()


def header_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor] | None:
    """Every tensor of a safetensors model directory as a meta tensor of its header's shape (nothing read but the
    headers); ``None`` when a weight file is not safetensors."""
    found: dict[str, torch.Tensor] = {}
    for file in weight_files(path):
        if file.suffix != ".safetensors":
            return None
        for name, info in check_safetensors_file(file).items():
            if name != "__metadata__":
                found[name] = torch.empty(info["shape"], device="meta")
    return found


def check_header_shapes(path: str | os.PathLike, expected: dict[str, torch.Tensor]) -> None:
    """Refuse weights whose names or shapes (from the safetensors headers) differ from what config.json says."""
    found = header_tensors(path)
    if found is None:
        return
    missing, wrong = compare_tensors(expected, found, "file", "config")
    if missing:
        raise DetectorFormatError(f"{path}: missing tensor(s) {missing[:8]}")
    if wrong:
        raise DetectorFormatError(f"{path}: tensors do not match config.json: {wrong[:6]}")


def load_provenance(path: str | os.PathLike) -> dict:
    cfg = read_config_json(path)
    provenance = cfg.get("provenance")
    return dict(provenance) if isinstance(provenance, dict) else {}  # informational: damaged reads as absent
