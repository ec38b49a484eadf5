"""The mergekit plugin: makes stock ``mergekit-yaml`` merge fine-tuned CLIP detectors.

mergekit has no plugin entry point, so :func:`register` (run automatically when a process imports
``mergekit``, see :mod:`mergekit_clip._autoload`) extends its registries and wraps two seams:

* architectures: ``CLIPDetector`` (ours) and the Hugging Face CLIP layouts go into
  ``mergekit.architecture.json_definitions.NAME_TO_ARCH``; ``clip_detector`` into ``AutoConfig``;
* ``GatherTensors.execute``: the forensic-head policy (:mod:`.heads`) and NaN/Inf checks;
* ``ExecuteMergeMethodTask.execute``: tensors identical in every input are passed through (exact);
* ``mergekit.merge.run_merge``: preflight checks, atomic output and the merged detector's config
  (:mod:`.merge_output`);
* the sparsifying kernels of TIES/DARE/breadcrumbs/DELLA get an O(n) selection (:mod:`.kernels.fast_sparsify`),
  and ``GeneralizedTaskArithmeticMerge.merge_group`` drops its per-ingredient temporaries
  (:mod:`.kernels.inplace_merge`); both bit-identical to stock, both off with ``MERGEKIT_CLIP_STOCK_KERNELS=1``.

``register()`` is idempotent: a second call is a no-op; a different architecture already registered under
one of our names is a conflict and raises, naming both.
"""

from __future__ import annotations

import logging
import os

LOG = logging.getLogger("mergekit_clip")
_REGISTERED = False
# Keep mergekit's own sparsification kernels and merge_group (for comparisons and debugging).
STOCK_KERNELS_ENV = "MERGEKIT_CLIP_STOCK_KERNELS"


def _register_architectures() -> None:
    from mergekit.architecture.json_definitions import NAME_TO_ARCH

    from mergekit_clip.plugin.architectures import ALL_ARCHITECTURES, is_ours

    for arch in ALL_ARCHITECTURES:
        for name in arch.architectures:
            existing = NAME_TO_ARCH.setdefault(name, [])
            foreign = [a for a in existing if not is_ours(a)]
            if foreign:
                raise RuntimeError(
                    f"mergekit already defines architecture {name!r} ({foreign[0].expected_model_type}); "
                    f"mergekit-clip's definition ({arch.expected_model_type}) would conflict"
                )
            if not any(a is arch for a in existing):
                existing.append(arch)


def _register_config() -> None:
    from transformers import AutoConfig

    from mergekit_clip.detector.spec import MODEL_TYPE, DetectorConfig

    AutoConfig.register(MODEL_TYPE, DetectorConfig, exist_ok=True)


def register() -> None:
    """Install everything into the running mergekit (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from mergekit_clip.plugin.heads import install_gather_hook, install_identity_shortcut
    from mergekit_clip.plugin.merge_output import install_run_merge_hook

    _register_config()
    _register_architectures()
    install_gather_hook()
    install_identity_shortcut()
    install_run_merge_hook()
    if os.environ.get(STOCK_KERNELS_ENV, "").strip() in ("", "0"):
        from mergekit_clip.plugin.kernels.fast_sparsify import install as install_fast_sparsify
        from mergekit_clip.plugin.kernels.inplace_merge import install as install_inplace_merge

        install_fast_sparsify()
        install_inplace_merge()
    _REGISTERED = True


def is_registered() -> bool:
    return _REGISTERED
