"""Dataset-reader registry: every format reads the same tiny dataset into the same records, refuses the same
escaping paths, and the dispatch picks the format by which file exists."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest

from mergekit_clip.data.deepfakebench import DatasetError, FrameRecord
from mergekit_clip.data.formats import FORMATS, dataset_format, load_frames, register_format

# one dataset, as (split, video dir, label string, frame numbers in listed order)
VIDEOS = [
    ("train", "real/v0", "FF-real", [10, 2, 0, 30]),
    ("train", "fake/v0", "FF-DF", [5, 1]),
    ("test", "real/v1", "FF-real", [3, 1, 2]),
    ("test", "fake/v1", "FF-DF", [7, 0]),
]


def _dfb(json_root: Path, name: str, videos) -> None:
    doc: dict = {}
    for split, video, label, numbers in videos:
        frames = [f"{video}\\{n}.png".replace("/", "\\") for n in numbers]  # Windows separators, as in the wild
        doc.setdefault(label, {}).setdefault(split, {})[video] = {"label": label, "frames": frames}
    (json_root / f"{name}.json").write_text(json.dumps({name: doc}))


def _frame_list(json_root: Path, name: str, videos) -> None:
    with open(json_root / f"{name}.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "split"])
        for split, video, label, numbers in videos:
            for n in numbers:
                writer.writerow([f"{video}/{n}.png", 1 if label == "FF-DF" else 0, split])


WRITERS = {"deepfakebench": _dfb, "frame_list": _frame_list}


def _expected(root: Path, split: str, frame_num: int | None) -> list[FrameRecord]:
    """Independent: videos in file order, frames by integer name, evenly spaced centre picks."""
    out = []
    for s, video, label, numbers in VIDEOS:
        if s != split:
            continue
        ordered = sorted(numbers)
        k = len(ordered) if frame_num is None or frame_num >= len(ordered) else frame_num
        picks = [ordered[int((i + 0.5) * len(ordered) / k)] for i in range(k)]
        out += [FrameRecord(root / video / f"{n}.png", int(label == "FF-DF"), video, "Tiny") for n in picks]
    return out


def test_every_format_has_a_writer_here():
    assert set(WRITERS) == set(FORMATS)


@pytest.mark.parametrize("name", sorted(FORMATS))
@pytest.mark.parametrize(("split", "frame_num"), [("train", None), ("train", 2), ("test", 1)])
def test_each_format_gives_the_same_records(tmp_path, name, split, frame_num):
    WRITERS[name](tmp_path, "Tiny", VIDEOS)
    assert dataset_format("Tiny", tmp_path) is FORMATS[name]
    records = load_frames("Tiny", split, json_root=tmp_path, data_root=tmp_path / "data", frame_num=frame_num)
    assert records == _expected(tmp_path / "data", split, frame_num)


@pytest.mark.parametrize("name", sorted(FORMATS))
@pytest.mark.parametrize("bad", ["../outside/v9", "/abs/v9"])
def test_each_format_refuses_paths_outside_the_root(tmp_path, name, bad):
    WRITERS[name](tmp_path, "Tiny", [*VIDEOS, ("test", bad, "FF-DF", [0])])
    with pytest.raises(DatasetError, match=f"Tiny.*{bad}"):
        load_frames("Tiny", "test", json_root=tmp_path, data_root=tmp_path / "data")
    records = load_frames("Tiny", "test", json_root=tmp_path, data_root=tmp_path / "data", allow_outside_root=True)
    assert len(records) == 6


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_each_format_refuses_symlinks_out_of_the_root_in_strict_mode(tmp_path, name):
    data, outside = tmp_path / "data", tmp_path / "elsewhere"
    (data / "real").mkdir(parents=True)
    outside.mkdir()
    (data / "real" / "v1").symlink_to(outside, target_is_directory=True)
    WRITERS[name](tmp_path, "Tiny", VIDEOS)
    with pytest.raises(DatasetError, match="outside the data root.*--no-follow-symlinks"):
        load_frames("Tiny", "test", json_root=tmp_path, data_root=data, follow_symlinks=False)


def test_missing_and_ambiguous_datasets_name_the_files(tmp_path):
    with pytest.raises(DatasetError, match=r"Nope\.json.*Nope\.csv|Nope\.csv.*Nope\.json"):
        load_frames("Nope", "test", json_root=tmp_path, data_root=tmp_path)
    _dfb(tmp_path, "Both", VIDEOS)
    _frame_list(tmp_path, "Both", VIDEOS)
    with pytest.raises(DatasetError, match="ambiguous"):
        load_frames("Both", "test", json_root=tmp_path, data_root=tmp_path)


def test_frame_list_errors_name_file_and_row(tmp_path):
    (tmp_path / "A.csv").write_text("path,lable\nx/0.png,1\n")
    with pytest.raises(DatasetError, match=r"A\.csv: columns \['path', 'lable'\]"):
        load_frames("A", "test", json_root=tmp_path, data_root=tmp_path)
    (tmp_path / "B.csv").write_text("path,label\nx/0.png,1\nx/1.png,maybe\n")
    with pytest.raises(DatasetError, match=r"B\.csv: row 3: label 'maybe'"):
        load_frames("B", "test", json_root=tmp_path, data_root=tmp_path)
    (tmp_path / "C.csv").write_text("path,label\nx/0.png,FF-DF\ny/0.png,ff-real\n")  # no split column = test
    records = load_frames("C", "test", json_root=tmp_path, data_root=tmp_path)
    assert [(r.label, r.video_id) for r in records] == [(1, "x"), (0, "y")]
    with pytest.raises(DatasetError, match="empty"):
        load_frames("C", "train", json_root=tmp_path, data_root=tmp_path)


def test_register_is_idempotent_and_refuses_conflicts():
    fmt = FORMATS["frame_list"]
    assert register_format(fmt) is fmt and list(FORMATS).count("frame_list") == 1
    with pytest.raises(ValueError, match="frame_list"):
        register_format(dataclasses.replace(fmt, description="another"))
