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


# ---------------------------------------------------------------- every command that writes a folder


def check_writer(out: Path, run, break_it, monkeypatch) -> None:
    """``run(overwrite)`` writes ``out``; with ``break_it`` applied an overwrite fails mid-write.

    The failing overwrite must leave the previous output byte-identical, remove its own temporary folder and
    the one a killed process left; the next overwrite succeeds and the folder follows the umask.
    """
    first = run(False)
    assert first.exit_code == 0, first.output
    before = snapshot(out)
    stale = outputs.sibling(out, outputs.TEMP, pid=dead_pid())
    stale.mkdir()
    (stale / "partial.bin").write_bytes(b"left by a killed run")
    with monkeypatch.context() as m:
        break_it(m)
        failed = run(True)
    assert failed.exit_code != 0
    assert snapshot(out) == before
    assert siblings(out) == []
    again = run(True)
    assert again.exit_code == 0, again.output
    assert siblings(out) == []
    mask = outputs.current_umask()
    wrong = [p for p in [out, *out.rglob("*")] if p.stat().st_mode & 0o777 != (0o777 if p.is_dir() else 0o666) & ~mask]
    assert not wrong  # mkdtemp made the folder 0700, safetensors writes 0600


def half_written_save_file(m) -> None:
    import mergekit_clip.detector.io as io

    def broken(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a tensor file")
        raise OSError("disk full (simulated)")

    m.setattr(io, "save_file", broken)


@pytest.fixture(scope="module")
def eval_setup(tmp_path_factory, tiny_spec):
    from test_eval_support import make_dataset, make_detectors

    root = tmp_path_factory.mktemp("writers")
    json_root, data_root = make_dataset(root / "ds", name="DFDC")
    return root, json_root, data_root, make_detectors(root / "models", tiny_spec, seeds=(0, 1))


def _data_args(json_root, data_root) -> list[str]:
    return ["--json-root", str(json_root), "--data-root", str(data_root), "--workers", "0"]


def test_import_overwrite(eval_setup, monkeypatch):
    from click.testing import CliRunner
    from test_eval_support import make_hf_classifier

    from mergekit_clip.cli import main

    root = eval_setup[0]
    source, out = make_hf_classifier(root / "hf_src"), root / "imported"

    def run(overwrite: bool):
        return CliRunner().invoke(main, ["import", str(source), str(out), "--from", "hf",
                                         *(["--overwrite"] if overwrite else [])])  # fmt: skip

    check_writer(out, run, half_written_save_file, monkeypatch)


def test_soup_overwrite(eval_setup, monkeypatch):
    from click.testing import CliRunner

    from eval.cli import main

    root, json_root, data_root, dirs = eval_setup
    out = root / "soup"

    def run(overwrite: bool):
        args = ["soup", "--method", "uniform", *map(str, dirs), "--out", str(out), *_data_args(json_root, data_root)]
        return CliRunner().invoke(main, args + (["--overwrite"] if overwrite else []))

    check_writer(out, run, half_written_save_file, monkeypatch)


def test_eval_report_overwrite(eval_setup, monkeypatch):
    from click.testing import CliRunner

    import eval.report
    from eval.cli import main

    root, json_root, data_root, dirs = eval_setup
    out = root / "report"

    def run(overwrite: bool):
        args = [str(dirs[0]), "--datasets", "DFDC", "--out", str(out), *_data_args(json_root, data_root)]
        return CliRunner().invoke(main, args + (["--overwrite"] if overwrite else []))

    def break_markdown(m):
        def broken(report, path):
            Path(path).write_text("# half a report")
            raise OSError("disk full (simulated)")

        m.setattr(eval.report, "write_markdown", broken)

    check_writer(out, run, break_markdown, monkeypatch)


def test_synth_overwrite(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import mergekit_clip.data.synthetic as synthetic
    from mergekit_clip.cli import main

    monkeypatch.setitem(synthetic.PRESETS, "small", synthetic.PresetSize(real_videos=8, frames=1, heldout_videos=4,
                                                                         heldout_frames=1))  # fmt: skip
    out = tmp_path / "synth"

    def run(overwrite: bool):
        args = ["data", "synth", str(out), "--preset", "small", *(["--overwrite"] if overwrite else [])]
        return CliRunner().invoke(main, args)

    def break_after_some_frames(m):
        real, calls = synthetic._write_png, []

        def broken(path, img):
            calls.append(path)
            if len(calls) > 5:
                raise OSError(f"could not write {path} (simulated)")
            real(path, img)

        m.setattr(synthetic, "_write_png", broken)

    check_writer(out, run, break_after_some_frames, monkeypatch)
