"""sha256 of files: the one place that reads a file in chunks into a digest (datasets, weights, imports, caches)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable

CHUNK = 1 << 22  # 4 MiB reads: large enough that hashing runs at disk speed, small enough to stay off the heap


def update_from_file(digest, file: str | os.PathLike, chunk: int = CHUNK):
    """Feed the rest of ``file`` (a path or an open binary file) into ``digest``; returns ``digest``."""
    if isinstance(file, (str, os.PathLike)):
        with open(file, "rb") as f:
            return update_from_file(digest, f, chunk)
    for block in iter(lambda: file.read(chunk), b""):
        digest.update(block)
    return digest


def files_sha256(files: Iterable[str | os.PathLike]) -> str:
    """sha256 over the bytes of ``files`` read one after another, in the order given."""
    digest = hashlib.sha256()
    for file in files:
        update_from_file(digest, file)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of one file's bytes (``sha256sum``'s value)."""
    return files_sha256([path])
