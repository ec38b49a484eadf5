"""The study file: one YAML naming data, families, merge candidates, selection, eval and bootstrap options.

Every section is a frozen pydantic model with unknown keys refused (with a did-you-mean). Precedence is
defaults < YAML < ``--set key=value`` (dotted keys); the resolved file is saved as ``OUT/study.resolved.yaml``.

    clip-study run studies/demo.yml [--set eval.device=cuda] [--dry-run]
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mergekit_clip import config_files
from mergekit_clip.config_files import format_validation_errors
from mergekit_clip.options import JSON_ROOT_HELP, Compression, Precision
from mergekit_clip.structured import StructuredFileError, read_yaml
from mergekit_clip.tracking import TrackingConfig
from study.jobs.config import ExecutorConfig
from study.search_config import SearchSpec

SOUP_METHODS = ("uniform", "greedy")


class StudyConfigError(ValueError):
    """A study file problem; the message names the key (and the closest valid one for a typo)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SynthStep(_Section):
    """``mergekit-clip data synth OUT --preset P --seed S``, run first when OUT holds no benchmark yet."""

    out: Path = Field(description="benchmark folder (json/, data/, synth.json)")
    preset: Literal["small", "full", "pretrain"] = "small"
    seed: int = 0


class DataConfig(_Section):
    json_root: Path = Field(description=JSON_ROOT_HELP)
    data_root: Path = Field(description="root the relative frame paths resolve against")
    source: str | list[str] = Field(description="training dataset(s) of the family: val split selects, test split "
                                    "is the in-domain score")  # fmt: skip
    val_split: str = Field("val", description="source-domain split that selection reads (never 'test')")
    test: list[str] = Field(description="held-out (cross-dataset) test sets; their test split is read")
    test_split: str = "test"
    frame_num: int | None = Field(None, gt=0, description="frames per video, evenly spaced; None = all")
    compression: Compression = "c23"
    allow_outside_root: bool = Field(False, description="accept frame paths that are absolute or climb out of "
                                     "data_root with '..' (every stage)")  # fmt: skip
    follow_symlinks: bool = Field(True, description="follow symlinks inside data_root; false refuses a link "
                                  "resolving outside it (every stage: training, stats, scoring, soups)")  # fmt: skip

    @field_validator("val_split")
    @classmethod
    def _not_test(cls, value: str) -> str:
        if value == "test":
            raise ValueError("selection must never read a test split: choose 'val' (or 'train')")
        return value

    @field_validator("test")
    @classmethod
    def _some(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("list at least one held-out test dataset")
        return value

    def root_options(self) -> dict[str, bool]:
        """The data-root rules every reader of the study gets (``load_frames`` keywords)."""
        return {"allow_outside_root": self.allow_outside_root, "follow_symlinks": self.follow_symlinks}

    def root_flags(self) -> list[str]:
        """The same rules as the flags of the public commands (``--dry-run`` lines)."""
        flags = ["--allow-outside-root"] if self.allow_outside_root else []
        return flags + ([] if self.follow_symlinks else ["--no-follow-symlinks"])

    @property
    def sources(self) -> list[str]:
        return [self.source] if isinstance(self.source, str) else list(self.source)


class FamilyConfig(_Section):
    """A family to train with ``clip-train`` (``config`` + ``set``), or an existing one (``path``)."""

    config: Path | None = Field(None, description="clip-train config file; the study sets output and data keys")
    path: Path | None = Field(None, description="an existing family folder (summary.json, base/, ingredients/)")
    set: dict[str, Any] = Field(default_factory=dict, description="clip-train overrides, dotted keys")
    output: Path | None = Field(None, description="family folder; None = OUT/families/<name>")
    data: Literal["study", "own"] = Field(
        "study", description="study = the study's data roots and source dataset; own = the config's (pre-training)"
    )
    backbone_from: str | None = Field(None, description="family whose first ingredient is this one's backbone")
    role: Literal["ingredients", "backbone"] = Field(
        "ingredients", description="backbone = only a start for other families: not scored, not merged"
    )

    @model_validator(mode="after")
    def _one_source(self) -> FamilyConfig:
        if (self.config is None) == (self.path is None):
            raise ValueError("give exactly one of 'config' (a clip-train file to run) or 'path' (a finished family)")
        if self.path is not None and (self.set or self.backbone_from):
            raise ValueError("'set' and 'backbone_from' apply to a family to train ('config'), not to 'path'")
        return self


class MergeCandidates(_Section):
    """A method and its parameter grid: each list is searched, scalars are fixed; the cartesian product runs."""

    method: str | None = Field(None, description="a registered mergekit method; None = the candidate group's name")
    grid: dict[str, Any] = Field(default_factory=dict, description="parameter -> value or list of values")
    select: dict[str, Any] = Field(default_factory=dict, description="ingredient selection (mode, lr, seed, ...)")
    family: str | None = Field(None, description="family to merge; None = the last ingredient family")
    search: SearchSpec | None = Field(None, description="an Optuna search instead of a grid (study/search_config.py)")

    @model_validator(mode="after")
    def _search_or_grid(self) -> MergeCandidates:
        if self.search is not None:
            listed = [k for k, v in self.grid.items() if isinstance(v, list)]
            both = sorted(set(self.grid) & set(self.search.space))
            if listed or both:
                raise ValueError(f"grid {listed or both}: with 'search', grid values are fixed scalars and the "
                                 "searched parameters live in search.space only")  # fmt: skip
        return self

    def points(self) -> list[dict[str, Any]]:
        """The grid's points in a fixed order (keys as written, values as listed)."""
        keys = list(self.grid)
        lists = [v if isinstance(v, list) else [v] for v in self.grid.values()]
        for key, values in zip(keys, lists):
            if not values:
                raise StudyConfigError(f"candidates grid {key!r}: an empty list searches nothing")
        return [dict(zip(keys, combo)) for combo in itertools.product(*lists)]

    def searched(self) -> list[str]:
        return [k for k, v in self.grid.items() if isinstance(v, list) and len(v) > 1]


class SoupCandidate(_Section):
    method: Literal["uniform", "greedy"] | None = Field(None, description="None = the soup's name")
    select: dict[str, Any] = Field(default_factory=dict)
    family: str | None = None
    tie_rule: Literal["keep", "drop"] = "drop"


PROTOCOL_KINDS = ("source_val", "held_out_forgery", "dev", "perturbed_val", "target_unlabelled")
UNLABELLED_SIGNALS = ("entropy", "confidence")
# the keys each protocol kind reads besides ``kind``, ``metric`` and ``tie_break`` (anything else is refused)
_PROTOCOL_KEYS = {
    "source_val": (),
    "held_out_forgery": ("hold_out", "families"),
    "dev": ("datasets", "split"),
    "perturbed_val": ("perturbations", "seed"),
    "target_unlabelled": ("datasets",),
}


def _check_frame_metric(value: str, where: str) -> str:
    from mergekit_clip.metrics import get_metric, metric_names

    usable = [n for n in metric_names() if not get_metric(n).uses_val_threshold]
    if value not in usable:
        raise ValueError(f"{where} {value!r}: choose a registered metric from {usable}")
    return value


class ProtocolConfig(_Section):
    """One selection protocol: where a candidate's proxy score comes from (``study.protocols``).

    ``kind`` defaults to the protocol's name; each kind reads only its own keys (``_PROTOCOL_KEYS``)."""

    kind: Literal["source_val", "held_out_forgery", "dev", "perturbed_val", "target_unlabelled"] | None = Field(
        None, description="None = the protocol's name"
    )  # fmt: skip
    metric: str | None = Field(None, description="registered metric (video_auc, log_loss, ece, ...; lower-is-better "
                               "ones are negated); target_unlabelled: entropy or confidence. None = video_auc / "
                               "entropy")  # fmt: skip
    tie_break: str | None = Field("log_loss", description="frame metric ordering models tied on `metric`")
    hold_out: list[str] = Field(default_factory=list, description="held_out_forgery: label groups (FF-NT) the "
                                "families are retrained without and selected on")  # fmt: skip
    families: list[str] | None = Field(None, description="held_out_forgery: families to retrain (None = every "
                                       "ingredient family the study trains on its source)")  # fmt: skip
    datasets: list[str] | None = Field(None, description="dev: labelled datasets; target_unlabelled: test sets "
                                       "whose frames are read without labels (None = data.test)")  # fmt: skip
    split: str = Field("val", description="dev: the split of the dev datasets")
    perturbations: list[str] = Field(default_factory=list, description="perturbed_val: suites or NAME:LEVEL specs")
    seed: int = Field(0, description="perturbed_val: seeds the perturbations")

    def resolved(self, name: str) -> ProtocolConfig:
        kind = self.kind or name
        if kind not in PROTOCOL_KINDS:
            raise ValueError(f"protocol {name!r}: set kind to one of {list(PROTOCOL_KINDS)} (or name it so)")
        metric = self.metric or ("entropy" if kind == "target_unlabelled" else "video_auc")
        tie = None if kind == "target_unlabelled" else self.tie_break
        return self.model_copy(update={"kind": kind, "metric": metric, "tie_break": tie})

    def check(self, name: str) -> None:
        """Refuse the keys of other kinds and what this kind needs but lacks; ``self`` is :meth:`resolved`."""
        kind = self.kind
        assert kind is not None
        allowed = {"kind", "metric", "tie_break", *_PROTOCOL_KEYS[kind]}
        stray = sorted(k for k in self.model_fields_set if k not in allowed)
        if stray:
            raise ValueError(f"protocols.{name} ({kind}): {stray} belong to another kind; {kind} reads "
                             f"{sorted(allowed)}")  # fmt: skip
        where = f"protocols.{name}.metric"
        if kind == "target_unlabelled":
            if self.metric not in UNLABELLED_SIGNALS:
                raise ValueError(f"{where} {self.metric!r}: target_unlabelled reads no labels; choose "
                                 f"{list(UNLABELLED_SIGNALS)}")  # fmt: skip
        else:
            _check_frame_metric(self.metric, where)
            if self.tie_break is not None:
                _check_frame_metric(self.tie_break, f"protocols.{name}.tie_break")
        if kind == "held_out_forgery" and not self.hold_out:
            raise ValueError(f"protocols.{name}.hold_out: name the label groups to hold out (e.g. [FF-NT])")
        if kind == "dev" and not self.datasets:
            raise ValueError(f"protocols.{name}.datasets: name the labelled development datasets")
        if kind == "perturbed_val":
            from mergekit_clip.data.perturbations import PerturbationError, expand_perturbations

            try:
                if not expand_perturbations(self.perturbations):
                    raise ValueError(f"protocols.{name}.perturbations: list a suite or NAME:LEVEL perturbations")
            except PerturbationError as e:
                raise ValueError(f"protocols.{name}.perturbations: {e}") from e


class LearnedCandidate(_Section):
    """A learned layer-wise merge (``eval.learned_merge``): one coefficient per ingredient and layer group, fitted by
    gradient descent on the labelled frames of the source val split (the frames selection reads: its val score is
    optimistic, as a tuned grid point's is)."""

    family: str | None = None
    select: dict[str, Any] = Field(default_factory=dict, description="ingredient selection (mode, lr, seed, ...)")
    form: Literal["linear", "task_arithmetic"] = Field(
        "linear", description="linear = learned soup (softmax weights per group); task_arithmetic = AdaMerging-style "
        "lambdas on task vectors"
    )  # fmt: skip
    objective: Literal["labelled"] = Field(
        "labelled", description="cross-entropy on labelled frames (the transductive entropy objective is "
        "clip-eval learn-merge --objective entropy: a study keeps transductive models out of its honest columns)"
    )  # fmt: skip
    steps: int = Field(50, gt=0)
    lr: float = Field(0.05, gt=0)
    batch_size: int = Field(32, gt=0)
    max_frames: int | None = Field(512, gt=0, description="frames fitted on (evenly spaced); None = all")
    init: float = Field(0.3, description="task_arithmetic: every lambda's start")
    seed: int = 0
    device: str = Field("cpu", description="cpu or cuda[:N]")


class SelectionConfig(_Section):
    metric: str = Field("video_auc", description="score on the source val split: a registered metric that is higher-"
                        "better and needs no val threshold (mergekit_clip.metrics.selection_metric_names)")  # fmt: skip
    tie_break: str | None = Field(
        "log_loss", description="registered frame metric ordering models tied on `metric` (same val frames); "
        "None = study order"
    )  # fmt: skip
    protocols: dict[str, ProtocolConfig] = Field(
        default_factory=dict, description="selection protocols scored side by side (source_val is always one: "
        "`metric` and `tie_break` above)"
    )  # fmt: skip
    protocol: str = Field("source_val", description="the protocol whose picks drive the verdicts")

    @field_validator("metric")
    @classmethod
    def _selectable(cls, value: str) -> str:
        from mergekit_clip.metrics import require_selection_metric

        return require_selection_metric(value)

    @field_validator("tie_break")
    @classmethod
    def _registered(cls, value: str | None) -> str | None:
        from mergekit_clip.metrics import get_metric, metric_names

        if value is not None and (value not in metric_names("frame") or get_metric(value).uses_val_threshold):
            raise ValueError(f"tie_break {value!r}: choose a frame metric from "
                             f"{[n for n in metric_names('frame') if not get_metric(n).uses_val_threshold]}")
        return value

    @model_validator(mode="after")
    def _protocols(self) -> SelectionConfig:
        for name, entry in self.protocols.items():
            entry.resolved(name).check(name)
        if "source_val" in self.protocols:
            raise ValueError("protocols.source_val: the source_val protocol is selection.metric and "
                             "selection.tie_break; do not list it")  # fmt: skip
        names = list(self.all_protocols())
        if self.protocol not in names:
            raise ValueError(f"protocol {self.protocol!r}: choose from {names}")
        if self.all_protocols()[self.protocol].kind == "target_unlabelled":
            raise ValueError(f"protocol {self.protocol!r} is transductive (reads the test frames): it is reported "
                             "beside the honest protocols, never used for the verdicts")  # fmt: skip
        return self

    def all_protocols(self) -> dict[str, ProtocolConfig]:
        """Every protocol, resolved, ``source_val`` first (built from ``metric`` and ``tie_break``)."""
        source = ProtocolConfig(kind="source_val", metric=self.metric, tie_break=self.tie_break)
        return {"source_val": source, **{n: p.resolved(n) for n, p in self.protocols.items()}}


class EvalConfig(_Section):
    """How models are scored: ``device``, ``precision``, ``batch_size``, ``workers`` mean what they mean for
    ``clip-eval`` and ``clip-train`` (``mergekit_clip.options.RunOptions``), with the same defaults."""

    device: str = Field("auto", description="auto (cuda when available), cpu, cuda or cuda:N")
    precision: Precision = Field("auto", description="auto = bf16 on CUDA, fp32 on CPU")
    batch_size: int = Field(64, gt=0)
    workers: int | None = Field(None, ge=0, description="decode workers; None = auto")
    resize: Literal["exact", "fast"] = "exact"
    cache_mb: float = Field(2048, ge=0, description="decoded-frame cache shared by every model")
    threads: int | None = Field(None, gt=0, description="torch CPU threads; None = torch's default")


class StatsConfig(_Section):
    """``mergekit-clip stats`` for the data-aware candidates (regmean: Gram matrices, fisher: diagonal Fisher),
    run on each of their ingredients before merging; fresh statistics (same weights, same frames) are reused."""

    dataset: Literal["own", "source"] = Field(
        "own", description="own = each ingredient's training dataset (a specialist's own forgery family); "
        "source = the study's first source dataset"
    )  # fmt: skip
    split: Literal["train", "val"] = Field("train", description="never a test split")
    max_frames: int | None = Field(512, gt=0, description="frames per ingredient (the first of the split); None = all")
    fisher_label: Literal["predicted", "true"] = "predicted"
    batch_size: int = Field(64, gt=0)


class RobustnessConfig(_Section):
    """After selection: the val-selected merge and soup against the val-selected ingredient under perturbations
    none of them saw (``clip-eval``'s suites, scored on held-out test sets)."""

    perturbations: list[str] = Field(
        ["deeperforensics"], description="suite names (deeperforensics, gend) or NAME:LEVEL specs"
    )  # fmt: skip
    datasets: list[str] | None = Field(None, description="held-out test sets to perturb; None = data.test")
    groups: list[str] | None = Field(
        None, description="candidate groups whose val-selected model is compared; None = the overall merge and soup"
    )  # fmt: skip
    seed: int = Field(0, description="seeds every perturbation's randomness (noise, occluded blocks)")

    @field_validator("perturbations")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        from mergekit_clip.data.perturbations import PerturbationError, expand_perturbations

        try:
            if not expand_perturbations(value):
                raise ValueError("list at least one suite or NAME:LEVEL perturbation")
        except PerturbationError as e:
            raise ValueError(str(e)) from e
        return value


class MergekitOptions(_Section):
    random_seed: int = Field(0, description="DARE/DELLA drop at random: a fixed seed makes candidates reproducible")
    device: str = Field("cpu", description="mergekit's math device (cpu keeps candidates bit-reproducible and their "
                        "content keys valid across machines; cuda for large models)")  # fmt: skip


class BootstrapConfig(_Section):
    n_boot: int = Field(1000, gt=0, description="resamples (videos drawn with replacement, stratified by label)")
    seed: int = 0
    confidence: float = Field(0.95, gt=0, lt=1)


class StudyConfig(_Section):
    name: str = "study"
    output: Path = Field(description="study folder: candidates/, scores/, report.md, study.json, figures/")
    synth: list[SynthStep] = Field(default_factory=list, description="benchmarks to generate first (demo)")
    data: DataConfig
    families: dict[str, FamilyConfig]
    merges: dict[str, MergeCandidates] = Field(default_factory=dict, description="candidate group -> method + grid")
    soups: dict[str, SoupCandidate] = Field(default_factory=dict, description="soup name -> uniform/greedy")
    learned: dict[str, LearnedCandidate] = Field(default_factory=dict, description="name -> learned layer-wise merge")
    selection: SelectionConfig = SelectionConfig()
    eval: EvalConfig = EvalConfig()
    mergekit: MergekitOptions = MergekitOptions()
    stats: StatsConfig = StatsConfig()
    robustness: RobustnessConfig | None = Field(None, description="perturbation suite on the selected models")
    # where the results are shown, not what is computed: left out of study.resolved.yaml and the cache keys
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, exclude=True, description="TensorBoard / MLflow")
    bootstrap: BootstrapConfig = BootstrapConfig()
    # where the jobs run, not what they compute: left out of study.json's provenance and the cache keys too
    executor: ExecutorConfig = Field(ExecutorConfig(), exclude=True, description="job resources per stage "
                                     "(--executor slurm)")

    @model_validator(mode="after")
    def _check(self) -> StudyConfig:
        if not self.families:
            raise ValueError("families: name at least one family")
        names = list(self.families)
        for name, fam in self.families.items():
            if fam.backbone_from is not None:
                if fam.backbone_from not in names or names.index(fam.backbone_from) >= names.index(name):
                    raise ValueError(
                        f"families.{name}.backbone_from {fam.backbone_from!r}: name a family listed before it "
                        f"({', '.join(names[: names.index(name)]) or 'none'})"
                    )
        if not self.ingredient_families():
            raise ValueError("families: every family has role 'backbone'; one must provide ingredients")
        groups = {**self.merges, **self.soups, **self.learned}
        for group, entry in groups.items():
            if entry.family is not None and entry.family not in self.ingredient_families():
                raise ValueError(
                    f"{group}.family {entry.family!r}: choose from {', '.join(self.ingredient_families())}"
                )
        for name, soup in self.soups.items():
            if (soup.method or name) not in SOUP_METHODS:
                raise ValueError(f"soups.{name}: method must be one of {list(SOUP_METHODS)} (or name the soup so)")
        robust = self.robustness
        if robust is not None and robust.datasets is not None:
            unknown = [d for d in robust.datasets if d not in self.data.test]
            if unknown:
                raise ValueError(f"robustness.datasets {unknown}: choose held-out test sets ({self.data.test})")
        if robust is not None and robust.groups is not None:
            known = [*self.merges, *self.soups, *self.learned, "any merge", "any soup"]
            unknown = [g for g in robust.groups if g not in known]
            if unknown:
                raise ValueError(f"robustness.groups {unknown}: choose from {known}")
        self._check_protocols()
        clash = (set(self.merges) & set(self.soups)) | (set(self.learned) & (set(self.merges) | set(self.soups)))
        if clash:
            raise ValueError(f"candidate names used twice (merges, soups, learned): {sorted(clash)}")
        return self

    def _check_protocols(self) -> None:
        trainable = [n for n in self.ingredient_families()
                     if self.families[n].config is not None and self.families[n].data == "study"]  # fmt: skip
        named_tests = {*self.data.test, *self.data.sources}
        for name, p in self.selection.all_protocols().items():
            if p.kind == "held_out_forgery":
                wrong = [f for f in p.families or [] if f not in trainable]
                if wrong:
                    raise ValueError(f"selection.protocols.{name}.families {wrong}: choose families the study "
                                     f"trains on its source ({trainable})")  # fmt: skip
                if not (p.families or trainable):
                    raise ValueError(f"selection.protocols.{name}: no family is trained on the source here "
                                     "(held_out_forgery retrains families from their config)")  # fmt: skip
                if name == self.selection.protocol and set(p.families or trainable) != set(self.ingredient_families()):
                    raise ValueError(f"selection.protocol {name!r} drives the verdicts, so it must score every "
                                     f"model: its families must be every ingredient family "
                                     f"({self.ingredient_families()})")  # fmt: skip
            if p.kind == "dev":
                shared = [d for d in p.datasets or [] if d in named_tests]
                if shared:
                    raise ValueError(f"selection.protocols.{name}.datasets {shared}: a dev set must not be a test "
                                     f"set or the source ({sorted(named_tests)})")  # fmt: skip
            if p.kind == "target_unlabelled":
                unknown = [d for d in p.datasets or [] if d not in self.data.test]
                if unknown:
                    raise ValueError(f"selection.protocols.{name}.datasets {unknown}: choose held-out test sets "
                                     f"({self.data.test})")  # fmt: skip

    def ingredient_families(self) -> list[str]:
        return [n for n, f in self.families.items() if f.role == "ingredients"]

    def family_of(self, entry: MergeCandidates | SoupCandidate | LearnedCandidate) -> str:
        return entry.family or self.ingredient_families()[-1]


# ---------------------------------------------------------------- loading, overrides, did-you-mean


def _model_at(model: Any, loc: tuple) -> type[BaseModel] | None:
    """The pydantic model owning the field at ``loc``; dict-valued fields (families, merges) skip their key."""
    current: Any = model
    for part in loc:
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
            origin = getattr(current, "__origin__", None)
            if origin is dict:
                current = ("dict", current.__args__[1])
        elif isinstance(current, tuple) and current[0] == "dict":
            current = current[1]
        else:
            return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """``a.b=value`` (YAML-parsed value) into a nested dict; ``merges.ties.grid.density=[0.1,0.2]`` works (unknown
    keys are named by the validation that follows, with a did-you-mean)."""
    return config_files.apply_overrides(raw, overrides, error=StudyConfigError)


def load_study(path: str | Path, overrides: list[str] = ()) -> StudyConfig:
    """Read a study file (``yaml.safe_load``), apply ``--set`` overrides and validate."""
    try:
        raw = read_yaml(path)
    except StructuredFileError as e:
        raise StudyConfigError(str(e)) from e
    except OSError as e:
        raise StudyConfigError(f"{path}: cannot read study file ({e})") from e
    if not isinstance(raw, dict):
        raise StudyConfigError(f"{path}: expected a mapping at the top level")
    raw = apply_overrides(raw, list(overrides))
    try:
        return StudyConfig.model_validate(raw)
    except ValidationError as e:
        raise StudyConfigError(
            format_validation_errors(e, str(path), "study file", lambda loc: _model_at(StudyConfig, loc))
        ) from e


def dump_study(config: StudyConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
