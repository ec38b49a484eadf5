"""clip-train: fine-tune families of CLIP deepfake detectors ("ingredients") for merging. See docs/train.md."""
