"""The mergekit plugin: makes stock ``mergekit-yaml`` merge fine-tuned CLIP detectors.

mergekit has no plugin entry point, so :func:`register` (run automatically when a process imports
``mergekit``, see :mod:`mergekit_clip._autoload`) extends its registries and wraps a few of its internals.
Every such *seam* is a row of the compatibility table in :mod:`.seams`: installed only when the internals it
needs are present (and, for code that mirrors a mergekit version, that version), otherwise left off with one
warning and a documented lesser mode. ``mergekit-clip plugin status`` lists them. The seams:

* ``architectures``/``autoconfig``: ``CLIPDetector`` (ours) and the Hugging Face CLIP layouts in
  ``NAME_TO_ARCH``; ``clip_detector`` in ``AutoConfig``;
* ``gather_hook`` (``GatherTensors.execute``): the forensic-head policy (:mod:`.heads`) and NaN/Inf checks;
* ``identity_shortcut`` (``ExecuteMergeMethodTask.execute``): tensors identical in every input pass through;
* ``run_merge`` (``mergekit.merge.run_merge``): preflight and recipe checks, atomic output and the merged
  detector's config (:mod:`.merge_output`); ``recipe_errors``: mergekit-yaml's own config errors as one line;
* ``fast_sparsify``/``inplace_merge_group``: bit-identical faster kernels (:mod:`.kernels`), both off with
  ``MERGEKIT_CLIP_STOCK_KERNELS=1``; ``methods``: the plugin's extra merge methods (public ``register()``).

``register()`` is idempotent and never raises: ``import mergekit`` works whatever happens here.
"""

from __future__ import annotations

import logging

from mergekit_clip.plugin.seams import STOCK_KERNELS_ENV, install_architectures, install_autoconfig

LOG = logging.getLogger("mergekit_clip")
_REGISTERED = False

__all__ = ["STOCK_KERNELS_ENV", "install_architectures", "install_autoconfig", "is_registered", "register"]


def register() -> None:
    """Install every seam that can be installed into the running mergekit (idempotent, never raises)."""
    global _REGISTERED
    if _REGISTERED:
        return
    try:
        from mergekit_clip.plugin.seams import install_all

        install_all()
    except Exception as e:  # the table already guards each seam; this guards the table itself
        LOG.warning("mergekit-clip: plugin registration failed (%s: %s); mergekit runs stock", type(e).__name__, e)
    _REGISTERED = True


def is_registered() -> bool:
    return _REGISTERED
