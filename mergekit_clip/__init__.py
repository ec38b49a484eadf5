"""mergekit-clip: merge fine-tuned CLIP deepfake detectors with every mergekit method.

This module is imported at interpreter start-up by the ``mergekit_clip.pth`` hook, so it must stay
free of heavy imports (no torch, no pydantic): the public API lives in submodules.
"""

__version__ = "0.1.0"
