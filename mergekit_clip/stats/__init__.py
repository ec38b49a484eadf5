"""Data statistics for data-aware merge methods: Gram matrices of linear-layer inputs (RegMean) and diagonal
Fisher information (Fisher merging). ``mergekit-clip stats`` computes them (:mod:`.cli`, :mod:`.collect`) and
stores them beside the ingredient (:mod:`.store`, format in docs/merge_methods.md); the registered methods
``regmean`` and ``fisher`` read them during a stock ``mergekit-yaml`` run."""
