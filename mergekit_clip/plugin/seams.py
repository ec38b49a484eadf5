"""The compatibility table: every mergekit (and transformers) internal the plugin touches, one row per seam.

mergekit has no plugin API beyond ``registry.register()``, so the plugin reaches into its internals. Each
:class:`Seam` names the internals it needs (module + attribute, pydantic fields where it reads task fields),
the mergekit version its code mirrors (where it re-implements a stock function bit for bit), the seams it
depends on, and the *lesser mode* that remains when it cannot be installed. :func:`install_all` (what
``mergekit_clip.plugin.register`` runs) installs a seam only when all of that holds; otherwise the seam stays
off with one warning naming the missing internal, and nothing it raises can escape: ``import mergekit``
always works. ``mergekit-clip plugin status`` prints :func:`states`.

Seams, in install order: ``run_merge``, ``autoconfig``, ``architectures``, ``gather_hook``,
``identity_shortcut``, ``recipe_errors``, ``fast_sparsify``, ``inplace_merge_group``, ``methods``; docs/plugin.md
has the table with each seam's internals and lesser mode (the text below is its source).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

LOG = logging.getLogger("mergekit_clip")
# Keep mergekit's own sparsification kernels and merge_group (for comparisons and debugging).
STOCK_KERNELS_ENV = "MERGEKIT_CLIP_STOCK_KERNELS"
METHODS_MODULE = "mergekit_clip.plugin.methods"
# Comma-separated seam names to leave off (e.g. a seam misbehaving with a newer mergekit), no warning.
SEAMS_OFF_ENV = "MERGEKIT_CLIP_SEAMS_OFF"


@dataclass(frozen=True)
class Internal:
    """One thing the plugin needs from mergekit: ``module`` + dotted ``attribute`` (+ pydantic ``fields``)."""

    module: str
    attribute: str = ""
    fields: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.module}:{self.attribute}" if self.attribute else self.module

    def resolve(self) -> object:
        """The object, or an ``AttributeError``/``ImportError`` naming what is missing."""
        obj = importlib.import_module(self.module)
        for part in filter(None, self.attribute.split(".")):
            if not hasattr(obj, part):
                raise AttributeError(f"no attribute {part!r}")
            obj = getattr(obj, part)
        declared = getattr(obj, "model_fields", {})
        absent = [f for f in self.fields if f not in declared]
        if absent:
            raise AttributeError(f"{self} has no field(s) {absent}")
        return obj


@dataclass(frozen=True)
class Seam:
    name: str
    purpose: str
    internals: tuple[Internal, ...]
    install: str  # "module:function"; the function installs the seam (idempotent)
    lesser_mode: str
    mirrors_mergekit: str | None = None  # the mergekit version whose code it re-implements
    requires: tuple[str, ...] = ()  # seams that must be active first
    off_env: str | None = None  # environment variable that switches it off on purpose
    optional_module: str | None = None  # the seam exists only when this module does


_MK = "mergekit"
_GTA = "mergekit.merge_methods.generalized_task_arithmetic"
SEAMS: tuple[Seam, ...] = (
    Seam(
        "run_merge",
        "preflight checks, recipe checks, atomic output, the merged detector's config.json and merge_log.json",
        (Internal("mergekit.merge", "run_merge"),
         Internal("mergekit.options", "MergeOptions", ("write_model_card", "copy_tokenizer"))),
        "mergekit_clip.plugin.merge_output:install_run_merge_hook",
        "CLIP merges are refused (mergekit-yaml says so in one Error: line; the architectures seam stays off, so "
        "mergekit does not know CLIP directories either); other merges are stock",
    ),
    Seam(
        "autoconfig",
        "transformers AutoConfig reads our config.json (model_type clip_detector)",
        (Internal("transformers", "AutoConfig.register"),),
        "mergekit_clip.plugin.seams:install_autoconfig",
        "merges of our-format detectors are refused before planning; Hugging Face CLIP layouts still merge",
    ),
    Seam(
        "architectures",
        "CLIPDetector and the Hugging Face CLIP layouts in mergekit's architecture registry",
        (Internal("mergekit.architecture.json_definitions", "NAME_TO_ARCH"),
         Internal("mergekit.architecture", "ModelArchitecture"),
         Internal("mergekit.architecture", "ModuleArchitecture"),
         Internal("mergekit.architecture", "ModuleDefinition"),
         Internal("mergekit.architecture", "WeightInfo")),
        "mergekit_clip.plugin.seams:install_architectures",
        "mergekit does not recognise CLIP directories; CLIP merges are refused",
        requires=("run_merge",),
    ),
    Seam(
        "gather_hook",
        "forensic-head policy (label order, 1-logit heads, missing heads) and NaN/Inf checks while tensors stream",
        (Internal("mergekit.io.tasks", "GatherTensors.execute"),
         Internal("mergekit.io.tasks", "GatherTensors", ("weight_info",))),
        "mergekit_clip.plugin.heads:install_gather_hook",
        "merges whose heads/adapters/projections need the head policy are refused; every input is scanned "
        "for NaN/Inf before the merge",
    ),
    Seam(
        "identity_shortcut",
        "a tensor identical in every input is written as it is (exact; multislerp fails on zero task vectors)",
        (Internal("mergekit.merge_methods.task_adapter", "ExecuteMergeMethodTask.execute"),
         Internal("mergekit.merge_methods.task_adapter", "ExecuteMergeMethodTask", ("model_order",))),
        "mergekit_clip.plugin.heads:install_identity_shortcut",
        "every tensor goes through the merge method (multislerp with a base fails on frozen-backbone ingredients)",
    ),
    Seam(
        "recipe_errors",
        "mergekit-yaml: a recipe that mergekit's own config model rejects is one Error: line, exit 1",
        (Internal("mergekit.scripts.run_yaml", "main.callback"), Internal("mergekit.config", "MergeConfiguration")),
        "mergekit_clip.plugin.recipe:install_recipe_errors",
        "stock mergekit prints a traceback for recipe errors it finds itself (the plugin's own checks still run)",
    ),
    Seam(
        "fast_sparsify",
        "O(n) TIES/DARE/breadcrumbs/DELLA selections, bit-identical to stock",
        tuple(Internal("mergekit.sparsify", a) for a in
              ("magnitude", "magnitude_outliers", "della_magprune", "rescaled_masked_tensor")),
        "mergekit_clip.plugin.kernels.fast_sparsify:install",
        "mergekit's stock sparsification kernels (same results, slower on CPU)",
        mirrors_mergekit="0.1.5",
        off_env=STOCK_KERNELS_ENV,
    ),
    Seam(
        "inplace_merge_group",
        "task-arithmetic merge_group with one N-tensor stack instead of per-ingredient temporaries",
        (Internal(_GTA, "GeneralizedTaskArithmeticMerge.merge_group"), Internal("mergekit.sparsify", "RescaleNorm"),
         Internal("mergekit.sparsify", "sparsify")),
        "mergekit_clip.plugin.kernels.inplace_merge:install",
        "mergekit's stock merge_group (same results, more memory)",
        mirrors_mergekit="0.1.5",
        off_env=STOCK_KERNELS_ENV,
    ),
    Seam(
        "methods",
        "the plugin's extra merge methods, through mergekit's public registry",
        (Internal("mergekit.merge_methods.registry", "register"),
         Internal("mergekit.merge_methods.registry", "registered_methods")),
        "mergekit_clip.plugin.seams:install_methods",
        "only mergekit's own merge methods are available",
        optional_module=METHODS_MODULE,
    ),
)  # fmt: skip
SEAM_NAMES = tuple(s.name for s in SEAMS)


@dataclass
class SeamState:
    seam: Seam
    active: bool
    reason: str  # why it is (in)active, one line
    warned: bool = False


_STATES: dict[str, SeamState] = {}
_added_methods: list[str] = []  # names the methods seam registered


def _mergekit_version() -> str | None:
    try:
        return version("mergekit")
    except PackageNotFoundError:
        return None


def _env_on(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def _load(target: str) -> Callable[[], object]:
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def _why_not(seam: Seam) -> str | None:
    """``None`` when the seam can be installed, else the one-line reason it cannot."""
    off = {n.strip() for n in os.environ.get(SEAMS_OFF_ENV, "").split(",") if n.strip()}
    if seam.name in off:
        return f"switched off by {SEAMS_OFF_ENV}={os.environ[SEAMS_OFF_ENV]}"
    if seam.off_env and _env_on(seam.off_env):
        return f"switched off by {seam.off_env}={os.environ[seam.off_env]}"
    if seam.optional_module and importlib.util.find_spec(seam.optional_module) is None:
        return f"{seam.optional_module} is not installed"
    for name in seam.requires:
        state = _STATES.get(name)
        if state is None or not state.active:
            return f"needs the {name} seam, which is inactive"
    for internal in seam.internals:
        try:
            internal.resolve()
        except Exception as e:  # ImportError, AttributeError, or anything a changed mergekit raises on import
            return f"internal {internal} unavailable ({type(e).__name__}: {e})"
    if seam.mirrors_mergekit is not None:
        found = _mergekit_version()
        if found != seam.mirrors_mergekit:
            return f"mirrors mergekit {seam.mirrors_mergekit}, found {found}"
    return None


def install_seam(seam: Seam) -> SeamState:
    reason = _why_not(seam)
    if reason is None:
        try:
            _load(seam.install)()
        except Exception as e:  # never let a seam take `import mergekit` down
            reason = f"install failed ({type(e).__name__}: {e})"
    if reason is None:
        state = SeamState(seam, True, "active")
    else:
        state = SeamState(seam, False, reason)
        quiet = reason.startswith("switched off") or (seam.optional_module and "not installed" in reason)
        if not quiet:
            LOG.warning("mergekit-clip: seam %s inactive: %s; lesser mode: %s", seam.name, reason, seam.lesser_mode)
            state.warned = True
    _STATES[seam.name] = state
    return state


def install_all() -> dict[str, SeamState]:
    """Install every seam that can be (in table order, so dependencies come first); never raises."""
    for seam in SEAMS:
        if seam.name in _STATES and _STATES[seam.name].active:
            continue
        try:
            install_seam(seam)
        except Exception as e:  # belt and braces: even a bug in this table must not break mergekit
            _STATES[seam.name] = SeamState(seam, False, f"unexpected error ({type(e).__name__}: {e})")
    return dict(_STATES)


def states() -> dict[str, SeamState]:
    return dict(_STATES)


def is_active(name: str) -> bool:
    if name not in SEAM_NAMES:
        raise KeyError(f"unknown seam {name!r}; seams: {', '.join(SEAM_NAMES)}")
    state = _STATES.get(name)
    return state is not None and state.active


def note_added_method(name: str) -> None:
    """A method registered after the ``methods`` seam ran (its module was mid-import then)."""
    _added_methods[:] = sorted({*_added_methods, name})


def added_methods() -> list[str]:
    """Merge methods the ``methods`` seam registered (empty when it is inactive)."""
    return list(_added_methods)


# ---------------------------------------------------------------- small installers that live with the table


def install_autoconfig() -> None:
    from transformers import AutoConfig

    from mergekit_clip.detector.spec import MODEL_TYPE, DetectorConfig

    AutoConfig.register(MODEL_TYPE, DetectorConfig, exist_ok=True)


def install_architectures() -> None:
    """Add our definitions to ``NAME_TO_ARCH`` (idempotent); a foreign one under our names is a conflict."""
    from mergekit.architecture.json_definitions import NAME_TO_ARCH

    from mergekit_clip.plugin.architectures import ALL_ARCHITECTURES, is_ours

    for arch in ALL_ARCHITECTURES:
        for name in arch.architectures:
            foreign = [a for a in NAME_TO_ARCH.get(name, []) if not is_ours(a)]
            if foreign:
                raise RuntimeError(
                    f"mergekit already defines architecture {name!r} ({foreign[0].expected_model_type}); "
                    f"mergekit-clip's definition ({arch.expected_model_type}) would conflict"
                )
    for arch in ALL_ARCHITECTURES:
        for name in arch.architectures:
            existing = NAME_TO_ARCH.setdefault(name, [])
            if not any(a is arch for a in existing):
                existing.append(arch)


def install_methods() -> None:
    from mergekit.merge_methods.registry import registered_methods

    before = {m.spec.name for m in registered_methods()}
    importlib.import_module(METHODS_MODULE).register_methods()
    after = {m.spec.name for m in registered_methods()}
    _added_methods[:] = sorted(after - before) or _added_methods
