"""Configuration of a CLIP deepfake detector: pydantic specs plus the transformers config class.

A detector directory carries one ``config.json`` written by :class:`DetectorConfig`, a
``transformers.PretrainedConfig`` subclass with its own ``model_type`` (``clip_detector``). mergekit reads it
through ``AutoConfig`` (the plugin registers the type) and matches ``architectures[0]`` (``CLIPDetector``).

The config is split into one pydantic model per concern (backbone geometry, head, adapter, preprocessing),
validated on load so that a bad field is reported by its path.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from transformers import PretrainedConfig

from mergekit_clip.detector.labels import CANONICAL_LABELS, canonical_head_labels

FORMAT_VERSION = 1
MODEL_TYPE = "clip_detector"
ARCHITECTURE = "CLIPDetector"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class _Spec(BaseModel):
    # allow_inf_nan=False: a NaN mean or an infinite eps in config.json is refused here, not found in the scores
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# Upper bounds on geometry: far above any CLIP tower (ViT-bigG/14: width 1664, 48 layers, 16 heads, embed 1280),
# low enough that an absurd config.json is refused before a tensor is allocated (the weights' shapes are then
# compared with the config's from the safetensors headers, before any tensor is read).
MAX_WIDTH, MAX_LAYERS, MAX_HEADS, MAX_IMAGE, MAX_EMBED, MAX_MLP_RATIO = 8192, 128, 128, 4096, 8192, 16.0


class BackboneSpec(_Spec):
    """Geometry of an open_clip ViT visual tower (names follow ``open_clip.CLIPVisionCfg``)."""

    image_size: int = Field(224, gt=0, le=MAX_IMAGE, description="input side in pixels")
    patch_size: int = Field(16, gt=0, le=MAX_IMAGE, description="patch side in pixels")
    width: int = Field(768, gt=0, le=MAX_WIDTH, description="transformer width (channels)")
    layers: int = Field(12, gt=0, le=MAX_LAYERS, description="number of residual attention blocks")
    heads: int = Field(12, gt=0, le=MAX_HEADS, description="attention heads")
    mlp_ratio: float = Field(4.0, gt=0, le=MAX_MLP_RATIO, description="MLP hidden width / width")
    embed_dim: int = Field(512, gt=0, le=MAX_EMBED, description="output dim of visual.proj")
    act: Literal["gelu", "quick_gelu"] = Field("gelu", description="QuickGELU for OpenAI weights")
    layer_norm_eps: float = Field(1e-5, gt=0, lt=1)

    @model_validator(mode="after")
    def _check(self) -> BackboneSpec:
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        return self

    @property
    def mlp_width(self) -> int:
        return int(self.width * self.mlp_ratio)

    @property
    def num_positions(self) -> int:
        return (self.image_size // self.patch_size) ** 2 + 1


class HeadSpec(_Spec):
    """A linear forensic head on a pooled CLIP feature.

    ``feature``: ``pooled`` = ln_post(CLS token) (width), ``projected`` = pooled @ visual.proj (embed_dim),
    ``patch_mean`` = mean of the final patch tokens before ln_post (width; Hugging Face
    ``CLIPForImageClassification``). ``num_classes`` is 2 (softmax) or 1 (sigmoid logit of ``fake``).
    ``labels`` are canonicalised on validation (``" Fake"`` -> ``"fake"``, see ``detector.labels``), so every
    stage that reads a spec compares canonical names; anything but real/fake is refused here.
    """

    type: Literal["linear"] = "linear"
    feature: Literal["pooled", "projected", "patch_mean"] = "pooled"
    normalize: bool = Field(False, description="L2-normalise the feature before the linear layer")
    num_classes: Literal[1, 2] = 2
    labels: tuple[str, ...] = Field(CANONICAL_LABELS, description="label names in logit order (real/fake)")

    @field_validator("labels", mode="after")
    @classmethod
    def _canonical_labels(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return canonical_head_labels(value)

    @model_validator(mode="after")
    def _check(self) -> HeadSpec:
        if self.num_classes == 2 and len(self.labels) != 2:
            raise ValueError(f"a 2-logit head needs 2 labels, got {list(self.labels)}")
        if self.num_classes == 1 and len(self.labels) not in (1, 2):
            raise ValueError(f"a 1-logit head needs the positive label (or both), got {list(self.labels)}")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"duplicate labels {list(self.labels)}")
        return self

    @property
    def positive_label(self) -> str:
        """The class a 1-logit head scores (the last label)."""
        return self.labels[-1]


class AdapterSpec(_Spec):
    """Residual bottleneck adapter on the head feature: f + up(gelu(down(f)))."""

    type: Literal["bottleneck"] = "bottleneck"
    hidden: int = Field(64, gt=0)


class ForensicsAdapterSpec(_Spec):
    """ForensicsAdapter (Cui et al., CVPR 2025): a ViT-tiny adapter and query tokens beside a frozen CLIP tower.

    CLIP layers are numbered by the block whose output they are (1-based; 0 = the ``ln_pre`` output), adapter
    blocks likewise (1-based). Defaults are the paper's ViT-L/14 setting. See ``detector/forensics_adapter.py``.
    """

    type: Literal["forensics_adapter"] = "forensics_adapter"
    image_size: int = Field(256, gt=0, description="frame side the adapter reads (pixels); CLIP gets it resized")
    patch_size: int = Field(16, gt=0, description="adapter patch side (pixels)")
    width: int = Field(192, gt=0, description="adapter width (timm vit_tiny geometry)")
    depth: int = Field(8, gt=0, description="adapter blocks kept (the original keeps blocks 1-8 of 12)")
    heads: int = Field(3, gt=0, description="adapter attention heads")
    mlp_ratio: float = Field(4.0, gt=0)
    pos_grid: int = Field(14, gt=0, description="side of the stored position grid (resized to the patch grid)")
    num_queries: int = Field(128, ge=4, description="learnable query tokens (a multiple of 4: the head halves twice)")
    fusion_map: dict[int, int] = Field(
        {1: 1, 2: 8, 3: 15}, description="adapter block -> CLIP layer whose patch tokens are added after it"
    )
    fusion_weight: float = Field(0.01, description="scale of the projected CLIP tokens added to the adapter")
    mlp_dim: int = Field(256, gt=0, description="mask-decoder MLP hidden width")
    mlp_out_dim: int = Field(128, gt=0, description="mask-decoder MLP output width")
    mlp_layers: int = Field(3, ge=1, description="layers per mask-decoder MLP")
    bias_heads: int = Field(16, gt=0, description="attention-bias heads (must equal the CLIP tower's heads)")
    rerun_from_layer: int = Field(0, ge=0, description="CLIP layer whose tokens start the query re-run (0: all blocks)")
    refine_layer: int = Field(7, gt=0, description="CLIP block after which the intra-block refinement is added")
    refine_dim: int = Field(192, gt=0, description="hidden width of the intra-block refinement")
    refine_weight: float = Field(0.05, description="scale of the refined patch tokens added to CLIP's")

    @model_validator(mode="after")
    def _check(self) -> ForensicsAdapterSpec:
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.num_queries % 4:
            raise ValueError(f"num_queries {self.num_queries} is not a multiple of 4")
        bad = sorted(k for k in self.fusion_map if not 1 <= k <= self.depth)
        if bad:
            raise ValueError(f"fusion_map adapter blocks {bad} are outside 1..depth ({self.depth})")
        if self.refine_layer <= self.rerun_from_layer:
            raise ValueError(
                f"refine_layer {self.refine_layer} must come after rerun_from_layer {self.rerun_from_layer}"
            )
        return self

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    def check_against(self, backbone: BackboneSpec) -> None:
        """Raise ``ValueError`` where this adapter does not fit the CLIP tower."""
        if self.bias_heads != backbone.heads:
            raise ValueError(f"bias_heads {self.bias_heads} differs from the CLIP tower's heads {backbone.heads}")
        bad = sorted(v for v in self.fusion_map.values() if not 0 <= v <= backbone.layers)
        if bad:
            raise ValueError(f"fusion_map CLIP layers {bad} are outside 0..layers ({backbone.layers})")
        if self.refine_layer > backbone.layers:
            raise ValueError(f"refine_layer {self.refine_layer} is beyond the CLIP tower's {backbone.layers} layers")
        if backbone.embed_dim % 4:
            raise ValueError(f"the head quarters embed_dim; {backbone.embed_dim} is not a multiple of 4")


class PreprocessSpec(_Spec):
    image_size: int = Field(224, gt=0, le=MAX_IMAGE)
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    interpolation: Literal["bicubic", "bilinear"] = "bicubic"
    resize_mode: Literal["shortest", "squash"] = "shortest"

    @field_validator("std")
    @classmethod
    def _positive_std(cls, value):
        if any(v <= 0 for v in value):
            raise ValueError(f"std must be positive, got {value}")
        if any(not 1e-3 <= v <= 10 for v in value):  # pixels are 0..1: anything else overflows the normalisation
            raise ValueError(f"std must lie in [0.001, 10] (pixels are scaled to 0..1), got {value}")
        return value

    @field_validator("mean")
    @classmethod
    def _pixel_mean(cls, value):
        if any(not -1 <= v <= 2 for v in value):
            raise ValueError(f"mean must lie in [-1, 2] (pixels are scaled to 0..1), got {value}")
        return value


# What a ForensicsAdapter's head computes: 2 logits from the projected, L2-normalised query tokens.
FORENSICS_ADAPTER_HEAD = HeadSpec(feature="projected", normalize=True)


class DetectorSpec(_Spec):
    """Everything that defines a detector's computation (provenance excluded)."""

    backbone: BackboneSpec = BackboneSpec()
    head: HeadSpec | None = HeadSpec()
    adapter: AdapterSpec | None = None
    preprocess: PreprocessSpec = PreprocessSpec()
    forensics_adapter: ForensicsAdapterSpec | None = None

    @model_validator(mode="after")
    def _check(self) -> DetectorSpec:
        if self.adapter is not None and self.head is None:
            raise ValueError("an adapter needs a head")
        fa = self.forensics_adapter
        if fa is not None:
            fa.check_against(self.backbone)
            if self.adapter is not None:
                raise ValueError("forensics_adapter and a bottleneck adapter exclude each other")
            if self.head != FORENSICS_ADAPTER_HEAD:
                raise ValueError(f"forensics_adapter needs head {FORENSICS_ADAPTER_HEAD.model_dump()}")
            if self.preprocess.image_size != fa.image_size:
                raise ValueError(
                    f"preprocess.image_size {self.preprocess.image_size} differs from the adapter's frame size "
                    f"{fa.image_size} (CLIP gets the frame resized to {self.backbone.image_size})"
                )
        return self

    @property
    def feature_dim(self) -> int:
        if self.head is not None and self.head.feature == "projected":
            return self.backbone.embed_dim
        return self.backbone.width


class DetectorConfig(PretrainedConfig):
    """transformers config of a ``CLIPDetector``; ``spec`` gives the validated view."""

    model_type = MODEL_TYPE

    format_version: int = FORMAT_VERSION
    backbone: dict | None = None
    head: dict | None = None
    adapter: dict | None = None
    preprocess: dict | None = None
    forensics_adapter: dict | None = None
    provenance: dict | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if not self.architectures:
            self.architectures = [ARCHITECTURE]

    @classmethod
    def from_spec(cls, spec: DetectorSpec, provenance: dict[str, Any] | None = None) -> DetectorConfig:
        dumped = spec.model_dump(mode="json")
        return cls(
            backbone=dumped["backbone"],
            head=dumped["head"],
            adapter=dumped["adapter"],
            preprocess=dumped["preprocess"],
            forensics_adapter=dumped["forensics_adapter"],
            provenance=dict(provenance or {}),
            architectures=[ARCHITECTURE],
        )

    @property
    def spec(self) -> DetectorSpec:
        try:
            return DetectorSpec(
                backbone=self.backbone or {},
                head=self.head,
                adapter=self.adapter,
                preprocess=self.preprocess or {},
                forensics_adapter=self.forensics_adapter,
            )
        except ValidationError as e:  # one line per problem, each led by its field path
            problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
            raise ValueError(f"invalid detector config: {problems}") from e

    @property
    def num_hidden_layers(self) -> int:  # what mergekit reads to plan layer by layer
        return int((self.backbone or {}).get("layers", BackboneSpec().layers))


def _is_plain_vit(cfg: dict | None) -> bool:
    vision = (cfg or {}).get("vision_cfg", {})
    return not vision.get("timm_model_name") and not isinstance(vision.get("layers"), (list, tuple))


def spec_from_open_clip(
    arch: str,
    *,
    quick_gelu: bool | None = None,
    image_size: int | None = None,
    head: HeadSpec | None = None,
    adapter: AdapterSpec | None = None,
) -> DetectorSpec:
    """Detector spec for an open_clip architecture name such as ``ViT-B-16`` or ``ViT-L-14-quickgelu``.

    OpenAI weights were trained with QuickGELU: pass ``quick_gelu=True`` (or a ``-quickgelu`` name) for them.
    """
    import open_clip

    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        names = [n for n in open_clip.list_models() if n.startswith("ViT")]
        known = [n for n in names if _is_plain_vit(open_clip.get_model_config(n))]
        raise ValueError(f"unknown open_clip architecture {arch!r}; ViT choices include {known[:12]}")
    vision = cfg["vision_cfg"]
    if not _is_plain_vit(cfg):
        raise ValueError(f"{arch!r} is not a plain ViT visual tower (ResNet/timm towers are not supported)")
    width = vision.get("width", 768)
    size = image_size or vision.get("image_size", 224)
    act = "quick_gelu" if (quick_gelu if quick_gelu is not None else cfg.get("quick_gelu", False)) else "gelu"
    backbone = BackboneSpec(
        image_size=size,
        patch_size=vision.get("patch_size", 16),
        width=width,
        layers=vision.get("layers", 12),
        heads=width // vision.get("head_width", 64),
        mlp_ratio=vision.get("mlp_ratio", 4.0),
        embed_dim=cfg["embed_dim"],
        act=act,
    )
    return DetectorSpec(
        backbone=backbone,
        head=head if head is not None else HeadSpec(),
        adapter=adapter,
        preprocess=PreprocessSpec(image_size=size),
    )


def with_forensics_adapter(spec: DetectorSpec, fa: ForensicsAdapterSpec | None = None) -> DetectorSpec:
    """``spec``'s CLIP tower with a ForensicsAdapter: its head, no bottleneck adapter, frames at ``fa.image_size``
    (the paper's defaults, with ``bias_heads`` set to the tower's heads, when ``fa`` is None)."""
    fa = fa if fa is not None else ForensicsAdapterSpec(bias_heads=spec.backbone.heads)
    preprocess = spec.preprocess.model_copy(update={"image_size": fa.image_size})
    return DetectorSpec(
        backbone=spec.backbone, head=FORENSICS_ADAPTER_HEAD, preprocess=preprocess, forensics_adapter=fa
    )
