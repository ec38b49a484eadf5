"""Figures drawn only when what they show changed: each figure is keyed by its inputs and by the drawing code.

``OUT/figures/.figure_keys.json`` maps a figure's file name to its key and the sha256 of the PNG written; a figure
whose key matches and whose file is intact is left as it is (same bytes, same modification time). Extending a
study with one candidate thus redraws the figures that show it (the dot plot, val vs test, that group's sweep, a
ROC plot whose curves changed) and no other.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from study.hashing import canonical_hash, write_json_atomic

KEYS_FILE = ".figure_keys.json"
_DRAWING_CODE = ("study/figures.py", "eval/report.py")


def _code_key() -> str:
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for rel in _DRAWING_CODE:
        digest.update((root / rel).read_bytes())
    return digest.hexdigest()


def array_digest(*arrays: np.ndarray) -> str:
    """sha256 of arrays' dtype, shape and bytes: the key part of per-frame scores a figure draws."""
    digest = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        digest.update(f"{a.dtype}{a.shape}".encode())
        digest.update(a.tobytes() if a.dtype != object else json.dumps(a.tolist()).encode())
    return digest.hexdigest()


def _sha256(file: Path) -> str:
    return hashlib.sha256(file.read_bytes()).hexdigest()


class FigureCache:
    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.file = self.directory / KEYS_FILE
        self.code = _code_key()
        try:
            self.known: dict[str, dict[str, str]] = json.loads(self.file.read_text()) if self.file.is_file() else {}
        except (OSError, json.JSONDecodeError):
            self.known = {}  # a damaged key file only costs redrawing
        self.drawn: list[str] = []
        self.reused: list[str] = []

    def draw(self, name: str, inputs: Any, make: Callable[[Path], Any]) -> Path:
        """``directory/name``, drawn by ``make(path)`` unless the same ``inputs`` drew the intact file already."""
        out = self.directory / name
        key = canonical_hash({"inputs": inputs, "code": self.code}, length=64)
        entry = self.known.get(name)
        if entry and entry.get("key") == key and out.is_file() and _sha256(out) == entry.get("sha256"):
            self.reused.append(name)
            return out
        make(out)
        self.known[name] = {"key": key, "sha256": _sha256(out)}
        self.drawn.append(name)
        return out

    def save(self) -> None:
        if self.drawn:
            write_json_atomic(self.file, self.known)
