"""DeepfakeBench JSON reader on hand-written fixtures of both JSON styles (format: docs/data.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mergekit_clip.data.deepfakebench import (
    DEFAULT_LABEL_DICT,
    DatasetError,
    list_datasets,
    load_frames,
    normalize_frame_path,
    select_frames,
)


def _write(json_root: Path, name: str, doc: dict) -> None:
    json_root.mkdir(parents=True, exist_ok=True)
    (json_root / f"{name}.json").write_text(json.dumps({name: doc}))


def _ff_doc() -> dict:
    """FaceForensics++ style: compression level under the split, Windows paths, fakes sharing a video name."""

    def frames(method: str, level: str, video: str, numbers: list[int]) -> list[str]:
        base = "original_sequences\\youtube" if method == "real" else f"manipulated_sequences\\{method}"
        return [f"FaceForensics++\\{base}\\{level}\\frames\\{video}\\{n}.png" for n in numbers]

    doc: dict = {"FF-real": {}, "FF-DF": {}, "FF-F2F": {}}
    for level in ("c23", "c40"):
        doc["FF-real"].setdefault("train", {})[level] = {
            "000": {"label": "FF-real", "frames": frames("real", level, "000", [0, 10, 2, 100, 20])}
        }
        doc["FF-real"].setdefault("test", {})[level] = {
            "001": {"label": "FF-real", "frames": frames("real", level, "001", [3, 1])}
        }
        doc["FF-DF"].setdefault("train", {})[level] = {
            "000_003": {"label": "FF-DF", "frames": frames("Deepfakes", level, "000_003", [5, 7])}
        }
        doc["FF-F2F"].setdefault("train", {})[level] = {
            "000_003": {"label": "FF-F2F", "frames": frames("Face2Face", level, "000_003", [9])}
        }
    return doc


def _plain_doc() -> dict:
    """Celeb-DF style: no compression level, './' and mixed separators."""
    return {
        "CelebDFv2_real": {
            "train": {"id0_0000": {"label": "CelebDFv2_real",
                                   "frames": ["./Celeb-DF-v2/Celeb-real/frames/id0_0000/8.png",
                                              ".\\Celeb-DF-v2\\Celeb-real\\frames\\id0_0000\\12.png"]}},
            "test": {"id1_0001": {"label": "CelebDFv2_real",
                                  "frames": ["Celeb-DF-v2/Celeb-real/frames/id1_0001/0.png"]}},
        },
        "CelebDFv2_fake": {
            "train": {"id0_id1_0000": {"label": "CelebDFv2_fake",
                                       "frames": ["./Celeb-DF-v2/Celeb-synthesis/frames/id0_id1_0000/1.png"]}},
            "test": {"id1_id0_0001": {"label": "CelebDFv2_fake",
                                      "frames": ["./Celeb-DF-v2/Celeb-synthesis/frames/id1_id0_0001/4.png"]}},
        },
    }  # fmt: skip


@pytest.fixture
def roots(tmp_path: Path) -> dict:
    _write(tmp_path / "json", "FaceForensics++", _ff_doc())
    _write(tmp_path / "json", "Celeb-DF-v2", _plain_doc())
    return {"json_root": tmp_path / "json", "data_root": tmp_path / "data"}


def test_ff_style_compression_windows_paths_numeric_order(roots):
    recs = load_frames("FaceForensics++", "train", **roots)
    data = roots["data_root"]
    real = [r for r in recs if r.video_id.endswith("frames/000") and "original" in r.video_id]
    assert [r.path for r in real] == [
        data / f"FaceForensics++/original_sequences/youtube/c23/frames/000/{n}.png" for n in (0, 2, 10, 20, 100)
    ]
    assert [r.label for r in recs] == [0] * 5 + [1, 1, 1]
    assert {r.dataset for r in recs} == {"FaceForensics++"}
    assert all("\\" not in str(r.path) for r in recs)


def test_c40_alias_and_compression_argument(roots):
    by_alias = load_frames("FaceForensics++_c40", "train", **roots)
    by_arg = load_frames("FaceForensics++", "train", compression="c40", **roots)
    assert [r.path for r in by_alias] == [r.path for r in by_arg]
    assert all("/c40/" in str(r.path) for r in by_alias)
    with pytest.raises(DatasetError, match=r"compression levels \['c23', 'c40'\], not 'raw'"):
        load_frames("FaceForensics++", "train", compression="raw", **roots)


def test_compression_detected_structurally_under_any_name(roots, tmp_path):
    _write(roots["json_root"], "MyFF", _ff_doc())
    recs = load_frames("MyFF", "test", **roots)
    assert [r.path.name for r in recs] == ["1.png", "3.png"]
    assert all("/c23/" in str(r.path) for r in recs)


def test_video_id_full_directory_vs_parent_pooling(roots):
    recs = load_frames("FaceForensics++", "train", **roots)
    fake_ids = {r.video_id for r in recs if r.label == 1}
    assert fake_ids == {
        "FaceForensics++/manipulated_sequences/Deepfakes/c23/frames/000_003",
        "FaceForensics++/manipulated_sequences/Face2Face/c23/frames/000_003",
    }
    pooled = load_frames("FaceForensics++", "train", video_id_mode="parent", **roots)
    assert {r.video_id for r in pooled if r.label == 1} == {"000_003"}  # DeepfakeBench's pooling


def test_plain_style_dot_prefix_and_mixed_separators(roots):
    recs = load_frames("Celeb-DF-v2", "train", **roots)
    data = roots["data_root"]
    assert [(r.path, r.label) for r in recs] == [
        (data / "Celeb-DF-v2/Celeb-real/frames/id0_0000/8.png", 0),
        (data / "Celeb-DF-v2/Celeb-real/frames/id0_0000/12.png", 0),
        (data / "Celeb-DF-v2/Celeb-synthesis/frames/id0_id1_0000/1.png", 1),
    ]
    assert recs[0].video_id == "Celeb-DF-v2/Celeb-real/frames/id0_0000"


def test_frame_num_evenly_spaced():
    frames = [str(i) for i in range(10)]
    assert select_frames(frames, 2) == ["2", "7"]  # centres of [0,5) and [5,10)
    assert select_frames(frames, 5) == ["1", "3", "5", "7", "9"]
    assert select_frames(frames, 10) == frames and select_frames(frames, 30) == frames
    for n in range(1, 40):
        for k in range(1, n + 1):
            picked = [int(x) for x in select_frames([str(i) for i in range(n)], k)]
            assert len(set(picked)) == k and picked == sorted(picked)
            # pick i is the frame whose time span [p, p + 1) holds the centre of the i-th of k equal segments
            assert all(p <= (i + 0.5) * n / k < p + 1 for i, p in enumerate(picked))


def test_frame_num_applies_after_numeric_sort(roots):
    recs = load_frames("FaceForensics++", "train", frame_num=2, **roots)
    real = [r.path.name for r in recs if r.label == 0]
    assert real == ["2.png", "20.png"]  # sorted 0,2,10,20,100 -> indices 1 and 3


def test_label_dict_override_and_unknown_label(roots):
    custom = {**DEFAULT_LABEL_DICT, "FF-F2F": 0}
    recs = load_frames("FaceForensics++", "train", label_dict=custom, **roots)
    assert [r.label for r in recs][-1] == 0
    with pytest.raises(DatasetError, match=r"'FF-DF'.*FaceForensics\+\+\.json|FaceForensics\+\+\.json.*'FF-DF'"):
        load_frames("FaceForensics++", "train", label_dict={"FF-real": 0}, **roots)


def test_errors_name_dataset_and_split(roots):
    with pytest.raises(DatasetError, match="unknown dataset 'DFDC'.*Celeb-DF-v2"):
        load_frames("DFDC", "test", **roots)
    with pytest.raises(DatasetError, match="unknown split 'dev'"):
        load_frames("Celeb-DF-v2", "dev", **roots)
    with pytest.raises(DatasetError, match="split 'val' of Celeb-DF-v2 is empty"):
        load_frames("Celeb-DF-v2", "val", **roots)


def test_non_integer_frame_name_is_an_error(roots):
    doc = _plain_doc()
    doc["CelebDFv2_real"]["train"]["id0_0000"]["frames"].append("Celeb-DF-v2/x/frame_a.png")
    _write(roots["json_root"], "Celeb-DF-v2", doc)
    with pytest.raises(DatasetError, match="frame_a.png.*not integer-named"):
        load_frames("Celeb-DF-v2", "train", **roots)


def test_list_datasets_and_normalize(roots):
    assert list_datasets(roots["json_root"]) == ["Celeb-DF-v2", "FaceForensics++"]
    assert normalize_frame_path(".\\a\\\\b/./0.png") == "a/b/0.png"
    assert normalize_frame_path("./datasets/rgb/x/1.png") == "datasets/rgb/x/1.png"


def test_default_label_dict_matches_design():
    fake = {"FF-DF", "FF-F2F", "FF-FS", "FF-NT", "FF-FH", "FF-SH", "DFD_fake", "CelebDFv1_fake", "CelebDFv2_fake",
            "DFDCP_FakeA", "DFDCP_FakeB", "DFDC_Fake", "DF_fake", "UADFV_Fake", "roop_Fake"}  # fmt: skip
    real = {"FF-real", "DFD_real", "CelebDFv1_real", "CelebDFv2_real", "DFDCP_Real", "DFDC_Real", "DF_real",
            "UADFV_Real", "roop_Real"}  # fmt: skip
    assert {k for k, v in DEFAULT_LABEL_DICT.items() if v == 1} == fake
    assert {k for k, v in DEFAULT_LABEL_DICT.items() if v == 0} == real
