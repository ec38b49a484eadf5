"""Import detectors from other code bases into our format; export ours to Hugging Face.

``import_detector(kind, source, out, options)`` with ``kind`` one of :data:`IMPORTERS`; each importer maps the
source's tensors to our names, states what it mapped (:class:`ImportReport`), refuses what it cannot represent
by name, and the result is written atomically. :func:`export_hf` goes the other way.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from mergekit_clip.convert.base import ConversionError, Converted, ImportOptions, ImportReport, write_converted
from mergekit_clip.convert.deepfakebench import import_deepfakebench
from mergekit_clip.convert.effort import import_effort
from mergekit_clip.convert.export_hf import export_hf
from mergekit_clip.convert.forensics_adapter import import_forensics_adapter
from mergekit_clip.convert.hf import import_hf
from mergekit_clip.convert.openclip import import_openclip
from mergekit_clip.digest import files_sha256
from mergekit_clip.registry import add_entry

_WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth"}

Importer = Callable[[Path, ImportOptions], Converted]
IMPORTERS: dict[str, Importer] = {}


def register_importer(kind: str, importer: Importer) -> Importer:
    """Add an importer (``mergekit-clip import --from KIND``); the same one again is a no-op, another under a
    taken name raises naming both."""
    return add_entry(IMPORTERS, kind, importer, "importer")


for _kind, _importer in (("openclip", import_openclip), ("deepfakebench", import_deepfakebench),
                         ("effort", import_effort), ("hf", import_hf),
                         ("forensics-adapter", import_forensics_adapter)):  # fmt: skip
    register_importer(_kind, _importer)


# Options that only one kind reads: refusing them elsewhere beats silently ignoring a user's intent.
_ONLY_FOR = {
    "head": ("openclip",),
    "trust_torchscript": ("openclip",),
    "hf_config": ("deepfakebench", "effort", "hf"),
    "forensics_adapter": ("forensics-adapter",),
}


def convert_source(kind: str, source: str | os.PathLike, options: ImportOptions | None = None) -> Converted:
    """Map a source to our names and spec, in memory (nothing written)."""
    if kind not in IMPORTERS:
        raise ValueError(f"unknown source kind {kind!r}; choose from {sorted(IMPORTERS)}")
    options = options or ImportOptions()
    for name, kinds in _ONLY_FOR.items():
        if getattr(options, name) and kind not in kinds:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} applies to --from {'/'.join(kinds)}, not --from {kind}")
    converted = IMPORTERS[kind](Path(source), options)
    converted.report.sha256 = source_sha256(Path(source))
    return converted


def source_sha256(source: Path) -> str:
    """SHA-256 over the source's weight files (sorted by name), so an import names exactly what it read."""
    files = sorted(p for p in source.iterdir() if p.suffix in _WEIGHT_SUFFIXES) if source.is_dir() else [source]
    return files_sha256(files)


def import_detector(
    kind: str,
    source: str | os.PathLike,
    out: str | os.PathLike,
    options: ImportOptions | None = None,
    overwrite: bool = False,
) -> ImportReport:
    """Import ``source`` as a detector directory at ``out`` (atomic; an existing ``out`` needs ``overwrite``)."""
    if Path(out).exists() and not overwrite:
        raise FileExistsError(f"{out} already exists (pass --overwrite to replace it)")
    converted = convert_source(kind, source, options)
    write_converted(converted, out, overwrite=overwrite)
    return converted.report


__all__ = [
    "IMPORTERS",
    "ConversionError",
    "Converted",
    "ImportOptions",
    "ImportReport",
    "convert_source",
    "export_hf",
    "import_detector",
]
