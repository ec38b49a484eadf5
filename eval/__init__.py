"""clip-eval: cross-dataset scoring of CLIP deepfake detectors and their merges, plus model soups.

Modules: ``metrics`` (AUC/EER/AP/ACC, video pooling), ``predict`` (fast batched scoring), ``report``
(JSON/CSV/markdown/PNG), ``soup`` (uniform/greedy soups with mergekit's linear method), ``cli`` (the
``clip-eval`` command).
"""
