"""Output folders that are never half-written and never lost: build beside, swap in when complete.

Every command that writes a folder (``clip-train``, ``clip-eval`` reports, ``clip-eval soup``, ``mergekit-clip
import``/``export``/``data synth``, merges) builds it in a hidden sibling ``.<name>.tmp-<host>-<pid>`` and swaps
it in only once it is complete::

    OUT  -> .OUT.old-<host>-<pid>      (the previous output, if any)
    .OUT.tmp-<host>-<pid> -> OUT
    rm -r .OUT.old-<host>-<pid>

A failure before the swap leaves ``OUT`` byte-identical and removes the temporary folder. A killed process
leaves its sibling behind under a recognisable name (a folder of this very process that it no longer writes, e.g.
after an interrupted training run, counts the same); the next writer into the same ``OUT`` removes siblings whose
process is dead (only for its own host: a pid means nothing on another machine of a shared file system), after
first restoring an ``.old`` folder when the kill fell between the two renames and ``OUT`` is missing.

Folders and files get the modes the user's umask gives (``tempfile.mkdtemp``/``mkstemp`` and safetensors' writer
would make them 0700/0600).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

TEMP = "tmp"
TRASH = "old"
_HELD: set[Path] = set()  # this process's temporary folders still being written (a same-pid folder not here is stale)


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname()) or "host"


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (``/proc``), else set and restored."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(path: str | os.PathLike) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would have (0o666/0o777 minus the umask)."""
    path = Path(path)
    base = 0o777 if path.is_dir() else 0o666
    os.chmod(path, base & ~current_umask())


def follow_umask_tree(root: str | os.PathLike) -> None:
    """:func:`follow_umask` on ``root`` and everything under it (safetensors writes its files 0600)."""
    mask = current_umask()
    for folder, _dirs, files in os.walk(root):
        os.chmod(folder, 0o777 & ~mask)
        for name in files:
            file = os.path.join(folder, name)
            if not os.path.islink(file):
                os.chmod(file, 0o666 & ~mask)


def sibling(path: str | os.PathLike, kind: str = TEMP, pid: int | None = None) -> Path:
    """``.<name>.<kind>-<host>-<pid>`` next to ``path`` (kind ``tmp`` or ``old``)."""
    path = Path(path).absolute()
    return path.parent / f".{path.name}.{kind}-{_host()}-{os.getpid() if pid is None else pid}"


def _sibling_pattern(name: str) -> re.Pattern:
    return re.compile(rf"^\.{re.escape(name)}\.({TEMP}|{TRASH})-(.+)-(\d+)(?:\.\d+)?$")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    except OSError:
        return False
    return True


def stale_siblings(path: str | os.PathLike) -> list[Path]:
    """Temporary and trash siblings of ``path`` left by dead processes of this host (sorted by name)."""
    path = Path(path).absolute()
    if not path.parent.is_dir():
        return []
    pattern = _sibling_pattern(path.name)
    host = _host()
    found = []
    for entry in path.parent.iterdir():
        m = pattern.match(entry.name)
        if not m or m.group(2) != host:
            continue
        pid = int(m.group(3))
        ours = pid == os.getpid()
        if (ours and entry.absolute() not in _HELD) or (not ours and not pid_alive(pid)):
            found.append(entry)
    return sorted(found)


def clean_stale(path: str | os.PathLike, keep: Path | None = None) -> list[Path]:
    """Remove what killed writers left beside ``path``; restore the previous output first if a kill lost it.

    Returns the removed folders. ``keep`` (a temporary folder the caller resumes in) is left alone.
    """
    path = Path(path).absolute()
    stale = [p for p in stale_siblings(path) if p != keep]
    trash = [p for p in stale if p.name.startswith(f".{path.name}.{TRASH}-")]
    if trash and not os.path.lexists(path):  # killed between "OUT -> old" and "tmp -> OUT"
        os.rename(trash[-1], path)
        stale.remove(trash[-1])
    for p in stale:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return stale


def make_temp_dir(path: str | os.PathLike) -> Path:
    """Create this process's temporary sibling of ``path`` (umask mode), cleaning stale ones first."""
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    base = sibling(path, TEMP)
    candidate, n = base, 0
    while True:
        try:
            os.mkdir(candidate)  # mode 0o777 & ~umask, unlike mkdtemp's 0o700
            _HELD.add(candidate)
            return candidate
        except FileExistsError:
            n += 1
            candidate = base.with_name(f"{base.name}.{n}")


def swap_into_place(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Make the complete folder ``tmp`` become ``path``; the previous ``path`` is deleted only afterwards."""
    tmp, path = Path(tmp), Path(path).absolute()
    old = None
    if os.path.lexists(path):
        old = sibling(path, TRASH)
        n = 0
        while os.path.lexists(old):
            n += 1
            old = sibling(path, TRASH).with_name(f"{sibling(path, TRASH).name}.{n}")
        os.rename(path, old)
    try:
        os.rename(tmp, path)
    except BaseException:
        if old is not None:
            os.rename(old, path)
        raise
    release(tmp)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def release(tmp: str | os.PathLike) -> None:
    """Stop holding this process's temporary folder: from now on it counts as left by a killed run."""
    _HELD.discard(Path(tmp).absolute())


def remove_tree(path: str | os.PathLike) -> None:
    shutil.rmtree(path, ignore_errors=True)
    release(path)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``path`` only if the block succeeds.

    An existing ``path`` is refused unless ``overwrite``; when replaced, the old one is removed only after the
    new one is in place, so a failure at any point leaves the previous output intact and no partial folder.
    """
    path = Path(path).absolute()
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(f"{path} already exists (pass overwrite to replace it)")
    tmp = make_temp_dir(path)
    try:
        yield tmp
        follow_umask_tree(tmp)
        swap_into_place(tmp, path)
    except BaseException:
        remove_tree(tmp)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Replace the file ``path`` with ``text`` in one rename (umask mode, not mkstemp's 0600)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        follow_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
