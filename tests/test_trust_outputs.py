"""Nothing lost (issue 12): every output folder is built beside and swapped in only when complete.

Each writer (detector save, import, soup, eval report, synth, clip-train) is given a run that fails after it has
started writing: the previous output must stay byte-identical and no partial or temporary folder may remain.
Folders left by a killed process (a dead pid in the name) are removed by the next writer into the same output,
and what is written follows the umask.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mergekit_clip import outputs
from mergekit_clip.detector.io import atomic_directory, save_detector
from mergekit_clip.detector.model import CLIPDetector
from mergekit_clip.detector.spec import BackboneSpec, DetectorSpec, HeadSpec


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes): the "byte-identical" comparison."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def siblings(path: Path) -> list[str]:
    """Hidden temporary/trash folders next to ``path``."""
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}."))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


class Boom(RuntimeError):
    pass


def tiny_detector(seed: int = 0):
    torch.manual_seed(seed)
    spec = DetectorSpec(
        backbone=BackboneSpec(image_size=16, patch_size=8, width=32, layers=1, heads=2, embed_dim=16),
        head=HeadSpec(num_classes=2),
    )
    return CLIPDetector(spec)


# ---------------------------------------------------------------- the helper itself


def test_failed_overwrite_keeps_the_old_folder_byte_identical(tmp_path):
    out = tmp_path / "out"
    with atomic_directory(out) as tmp:
        (tmp / "a.txt").write_text("old")
    before = snapshot(out)
    with pytest.raises(Boom), atomic_directory(out, overwrite=True) as tmp:
        (tmp / "a.txt").write_text("new, half written")
        raise Boom
    assert snapshot(out) == before
    assert siblings(out) == []


def test_failed_first_write_leaves_no_folder(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(Boom), atomic_directory(out) as tmp:
        (tmp / "a.txt").write_text("partial")
        raise Boom
    assert not out.exists() and siblings(out) == []


def test_stale_temp_of_a_dead_process_is_cleaned_by_the_next_writer(tmp_path):
    out = tmp_path / "out"
    stale = outputs.sibling(out, outputs.TEMP, pid=dead_pid())
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"partial")
    foreign = out.parent / f".out.tmp-otherhost-{os.getpid()}"  # another machine's pid: not ours to judge
    foreign.mkdir()
    with atomic_directory(out) as tmp:
        (tmp / "a.txt").write_text("new")
    assert not stale.exists()
    assert foreign.exists()
    assert snapshot(out) == {"a.txt": b"new"}


def test_kill_between_the_two_renames_restores_the_previous_output(tmp_path):
    out = tmp_path / "out"
    pid = dead_pid()
    trash = outputs.sibling(out, outputs.TRASH, pid=pid)  # "OUT -> old" done, "tmp -> OUT" never happened
    trash.mkdir()
    (trash / "a.txt").write_text("previous")
    outputs.sibling(out, outputs.TEMP, pid=pid).mkdir()
    outputs.clean_stale(out)
    assert snapshot(out) == {"a.txt": b"previous"}
    assert siblings(out) == []


def test_outputs_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "out"
        with atomic_directory(out) as tmp:
            (tmp / "a.txt").write_text("x")
        outputs.write_text_atomic(out / "b.txt", "y")
        assert out.stat().st_mode & 0o777 == 0o755  # mkdtemp made 0o700
        assert (out / "b.txt").stat().st_mode & 0o777 == 0o644  # mkstemp made 0o600
        os.umask(0o077)
        outputs.write_text_atomic(out / "c.txt", "z")
        assert (out / "c.txt").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_save_detector_overwrite_that_fails_keeps_the_old_detector(tmp_path, monkeypatch):
    out = tmp_path / "det"
    save_detector(tiny_detector(0), out)
    before = snapshot(out)
    import mergekit_clip.detector.io as io

    def broken_save(*args, **kwargs):
        Path(args[1]).write_bytes(b"half a tensor file")
        raise Boom

    monkeypatch.setattr(io, "save_file", broken_save)
    with pytest.raises(Boom):
        save_detector(tiny_detector(1), out, overwrite=True)
    assert snapshot(out) == before and siblings(out) == []
