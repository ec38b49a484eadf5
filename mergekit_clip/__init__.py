"""mergekit-clip: merge fine-tuned CLIP deepfake detectors with every mergekit method.

Kept free of heavy imports (no torch, no pydantic): the ``mergekit_clip.pth`` start-up hook may import
:mod:`mergekit_clip._autoload` in any process that imports mergekit. The public API lives in submodules.
"""

__version__ = "0.1.0"
