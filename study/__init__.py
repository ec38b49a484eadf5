"""The study layer: one YAML runs a merging study (family, merge search, honest selection, error bars).

It sits on top of ``mergekit_clip``, ``train`` and ``eval`` and may import all three; nothing imports it.
"""
