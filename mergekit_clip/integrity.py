"""Cache entries that verify what they reuse: a sha256 beside every file, checked before its content is trusted.

A cache entry ``F`` (a score ``.npz``, a features or statistics ``.safetensors``) is written as ``F`` plus
``F.sha256`` in ``sha256sum`` format (``sha256sum -c F.sha256`` checks it by hand). The digest file is written
first and the entry renamed into place last, so a kill in between leaves an entry whose digest does not match: it
is rebuilt, never reused. Content-keyed stores people trust do the same (git verifies an object's hash, DVC and
Bazel a cache entry's digest): a key says what an entry *should* hold, only its digest says what it *does* hold.

On a mismatch (a file rewritten in place, truncated, half-synced, or without a recorded digest) the caller either
rebuilds with one warning naming the file, or, with ``rebuild=False`` (``clip-study run --no-rebuild``), stops with
:class:`CacheEntryError`, an ``Error:`` line naming the file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import click

from mergekit_clip.digest import file_sha256

SUFFIX = ".sha256"
NO_DIGEST = "has no recorded digest"


class CacheEntryError(click.ClickException):
    """A cache entry that does not match its recorded digest, with rebuilding switched off."""


def digest_path(file: str | os.PathLike) -> Path:
    file = Path(file)
    return file.with_name(file.name + SUFFIX)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def recorded_digest(file: str | os.PathLike) -> str | None:
    """The digest written beside ``file``, or ``None`` when there is none (or it is not one)."""
    try:
        text = digest_path(file).read_text(encoding="ascii", errors="replace").split()
    except OSError:
        return None
    if not text or len(text[0]) != 64 or any(c not in "0123456789abcdef" for c in text[0]):
        return None
    return text[0]


def write_digest(file: str | os.PathLike, digest: str) -> None:
    """Write ``file``'s digest beside it atomically (``sha256sum`` format)."""
    target = digest_path(file)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(f"{digest}  {Path(file).name}\n")
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    from mergekit_clip.outputs import current_umask

    return current_umask()


def mismatch(file: str | os.PathLike, actual: str) -> str | None:
    """Why ``file`` (whose content hashes to ``actual``) cannot be trusted, or ``None`` when it can."""
    recorded = recorded_digest(file)
    if recorded is None:
        return f"{NO_DIGEST} ({digest_path(file).name} missing or damaged)"
    if recorded != actual:
        return f"does not match its recorded digest (sha256 {actual[:12]}, recorded {recorded[:12]})"
    return None


def read_verified(file: str | os.PathLike) -> tuple[bytes, str | None]:
    """``(content, reason)``: the file's bytes (read once, hashed in memory) and why they cannot be trusted."""
    data = Path(file).read_bytes()
    return data, mismatch(file, sha256_bytes(data))


def save_verified(write: Callable[[Path], None], file: str | os.PathLike) -> Path:
    """``write(tmp)`` a new entry beside ``file``, record its digest, then rename it into place."""
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{file.name}.", suffix=file.suffix, dir=file.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        write_digest(file, file_sha256(tmp))
        os.replace(tmp, file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return file


def remove_entry(file: str | os.PathLike) -> None:
    Path(file).unlink(missing_ok=True)
    digest_path(file).unlink(missing_ok=True)


def distrust(
    file: str | os.PathLike,
    reason: str,
    *,
    rebuild: bool = True,
    what: str = "cache entry",
    remove: Callable[[Path], None] = remove_entry,
) -> None:
    """A damaged entry: ``remove`` it and say so once (it is rebuilt), or refuse when ``rebuild`` is off."""
    if not rebuild:
        raise CacheEntryError(f"{what} {file} {reason}; refusing to reuse it (run without --no-rebuild to rebuild it)")
    if reason.startswith(NO_DIGEST):  # a cache from before digests: one line, not one per file
        if not _legacy_warned:
            click.echo(f"Warning: {what} {file} {reason}; rebuilding it and every other entry written before "
                       "digests were recorded", err=True)  # fmt: skip
            _legacy_warned.append(True)
    else:
        click.echo(f"Warning: {what} {file} {reason}; rebuilding it", err=True)
    remove(Path(file))


_legacy_warned: list[bool] = []  # this process has said once that entries without a digest are rebuilt
