"""One dataset written in every registered format (tests loop over ``mergekit_clip.data.formats.FORMATS``).

A dataset is a list of videos ``(split, video, label string, frame paths)``, read from a flat DeepfakeBench JSON
(``json_videos``) and written back by ``WRITERS[format]``; ``flipped`` flips one video's label (an edited file).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path


def json_videos(json_root: Path, name: str) -> list[tuple[str, str, str, list[str]]]:
    """(split, video, label string, frame paths) of a flat DeepfakeBench JSON, in file order."""
    doc = json.loads((json_root / f"{name}.json").read_text())[name]
    return [(split, vid, v["label"], v["frames"]) for group in doc.values() for split, videos in group.items()
            for vid, v in videos.items()]  # fmt: skip


def write_json(json_root: Path, name: str, videos) -> Path:
    doc: dict = {}
    for split, vid, label, frames in videos:
        doc.setdefault(label, {}).setdefault(split, {})[vid] = {"label": label, "frames": frames}
    file = json_root / f"{name}.json"
    file.write_text(json.dumps({name: doc}))
    return file


def write_csv(json_root: Path, name: str, videos) -> Path:
    file = json_root / f"{name}.csv"
    with open(file, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "split"])
        for split, _, label, frames in videos:
            writer.writerows([p, label, split] for p in frames)
    return file


WRITERS = {"deepfakebench": write_json, "frame_list": write_csv}  # one per registered format
FLIP = {"CelebDFv2_real": "CelebDFv2_fake", "CelebDFv2_fake": "CelebDFv2_real"}


def flipped(videos, split: str):
    """The same videos with the label of the first video of ``split`` flipped."""
    first = next(i for i, v in enumerate(videos) if v[0] == split)
    return [(s, vid, FLIP[label] if i == first else label, frames) for i, (s, vid, label, frames) in enumerate(videos)]
