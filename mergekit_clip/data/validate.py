"""Validation and summary of datasets in every registered format (``mergekit_clip.data.formats``).

:func:`validate_dataset` walks one dataset file and reports every problem it finds, grouped by kind with counts
and example paths, instead of stopping at the first: frame paths outside the data root (never opened), missing
or unreadable frames, unknown label strings, non-integer frame names, and videos shared between train and test.
An empty split is a note (a test-only dataset has no train split; the command that reads a split refuses it if it
is empty), a dataset with no video at all an error. The official files reuse videos across
splits by design (Celeb-DF, DFD, UADFV, DeeperForensics; docs/data.md), so the overlap is a warning unless
``strict``; val equal to test is a note so nobody mistakes selection on val for an honest protocol.

With a data root, forgery masks are counted per label (DeepfakeBench's rule: the frame path with its ``frames``
folder replaced by ``masks``; files are not opened): fake frames without one are a note, since only a mode that
needs masks (``forensics_adapter``) refuses them; a mask path leaving the data root is an error like a frame's.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from mergekit_clip.data.deepfakebench import (
    ALLOW_OUTSIDE_HINT,
    SPLITS,
    DatasetError,
    FrameRoot,
    VideoEntry,
    canonical_labels,
    frame_number,
    mask_rel_path,
    normalize_frame_path,
    video_id,
)
from mergekit_clip.data.formats import FORMATS, dataset_format, get_format
from mergekit_clip.data.transforms import FrameDecodeError, FrameMissingError, ImageCheck, check_image
from mergekit_clip.options import CHECK_IMAGES_DEFAULT, CheckImages

Severity = Literal["error", "warning", "note"]
EXAMPLES = 5  # example paths kept per finding


@dataclass
class Finding:
    """One kind of problem in one dataset: how many times it occurred and a few examples."""

    kind: str
    severity: Severity
    message: str
    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, example: str) -> None:
        self.count += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append(example)


@dataclass
class SplitStats:
    videos: int = 0
    frames: int = 0
    masks: int | None = None  # frames whose mask file exists (None: not checked, no data root)


@dataclass
class DatasetReport:
    dataset: str
    json_path: Path  # the file the dataset is read from (whichever format holds it)
    format: str = "deepfakebench"
    findings: dict[str, Finding] = field(default_factory=dict)
    # (label group, label string, split) -> counts
    stats: dict[tuple[str, str, str], SplitStats] = field(default_factory=dict)

    def finding(self, kind: str, severity: Severity, message: str) -> Finding:
        return self.findings.setdefault(kind, Finding(kind, severity, message))

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings.values() if f.severity == "error"]


def validate_dataset(
    dataset: str,
    *,
    json_root: str | os.PathLike,
    data_root: str | os.PathLike | None,
    label_dict: Mapping[str, int] | None = None,
    compression: str = "c23",
    check_images: CheckImages = CHECK_IMAGES_DEFAULT,
    strict: bool = False,
    progress: bool = True,
    allow_outside_root: bool = False,
    follow_symlinks: bool = True,
    check_masks: bool = True,
) -> DatasetReport:
    """Every problem of ``dataset`` (see the module docstring); frames are checked per ``check_images``.

    A JSON that cannot be parsed at all is reported as a single ``json`` error. Frame paths outside ``data_root``
    (absolute, ``..``, symlinks pointing out; see ``FrameRoot``) are errors and are never opened.
    """
    root = FrameRoot(data_root, allow_outside_root, follow_symlinks)
    labels = canonical_labels(label_dict)
    try:
        fmt = dataset_format(dataset, json_root)
        report = DatasetReport(dataset, fmt.source(dataset, json_root), fmt.name)
        listed = fmt.videos(dataset, json_root, compression)
    except DatasetError as e:
        tried = [f.source(dataset, json_root) for f in FORMATS.values()]
        report = DatasetReport(dataset, next((t for t in tried if t.exists()), tried[0]))
        report.finding("json", "error", "the dataset file cannot be read").add(str(e))
        return report
    by_split: dict[str, list[VideoEntry]] = {s: [] for s in SPLITS}
    for video in listed.videos:
        by_split[video.split].append(video)
    for name in (s for s in listed.splits if s not in SPLITS):
        report.finding("unknown_split", "warning", f"split names other than {list(SPLITS)} are ignored").add(name)

    ids: dict[str, set[str]] = {}
    frames_to_check: list[tuple[str, Path]] = []
    if not any(by_split.values()):
        report.finding("empty_dataset", "error", f"no split {list(SPLITS)} has a video").add(dataset)
    for split, videos in by_split.items():
        if not videos:
            report.finding(
                "empty_split", "note", "split has no videos (an error only for a command that reads it)"
            ).add(f"{dataset}/{split}")
        ids[split] = set()
        for video in videos:
            where = f"{video.label_group}/{split}/{video.name}"
            key = (video.label_group, str(video.label), split)
            stats = report.stats.setdefault(key, SplitStats())
            stats.videos += 1
            stats.frames += len(video.frames)
            label_value = fmt.label_value(video.label, labels)
            if data_root is not None and check_masks and fmt.masks:  # a format without masks: not counted
                stats.masks = (stats.masks or 0) + _count_masks(report, root, video, where, label_value)
            if label_value is None:
                report.finding(
                    "unknown_label", "error", f"label string not in the label dict {sorted(labels)} (case-insensitive)"
                ).add(f"{where}: {video.label!r}")
            if not video.frames:
                report.finding("empty_video", "error", "video lists no frames").add(where)
            for raw in video.frames:
                rel = normalize_frame_path(str(raw))
                if frame_number(rel) is None:
                    report.finding("non_integer_frame", "error", "frame file name is not an integer").add(str(raw))
                outside = root.problem(rel)
                if outside:
                    report.finding(
                        "outside_root", "error", f"frame path outside the data root, not opened ({ALLOW_OUTSIDE_HINT})"
                    ).add(f"{where}: {raw!r} {outside}")
                elif data_root is not None:
                    frames_to_check.append((str(raw), root.path(rel)))
            if video.frames:
                ids[split].add(video_id(str(video.frames[0])))
    _split_findings(report, ids, bool(by_split["val"]), strict)
    if check_images != "none":
        _check_frames(report, frames_to_check, check_images, progress)
    return report


def _split_findings(report: DatasetReport, ids: dict[str, set[str]], has_val: bool, strict: bool) -> None:
    """Videos shared by train and test (a warning, or an error when ``strict``), and val identical to test."""
    shared = sorted(ids["train"] & ids["test"])
    if shared:
        finding = report.finding(
            "train_test_overlap",
            "error" if strict else "warning",
            "videos appear in both train and test (official Celeb-DF/DFD/UADFV/DeeperForensics files do this)",
        )
        for vid in shared:
            finding.add(vid)
    if has_val and ids["val"] == ids["test"]:
        report.finding("val_equals_test", "note", "val is the test set: selecting on val is test-set selection").add(
            report.dataset
        )


def _count_masks(report: DatasetReport, root: FrameRoot, video: VideoEntry, where: str, label: int | None) -> int:
    """Mask files of ``video``'s frames (one ``stat`` each); a fake frame without one is a ``missing_mask`` note."""
    found = 0
    for raw in video.frames:
        mask = mask_rel_path(normalize_frame_path(str(raw)))
        if mask is None or root.problem(mask, resolve=False):  # no 'frames' folder; or the frame's own error
            exists = False
        elif problem := root.problem(mask):
            report.finding("mask_outside_root", "error", f"mask path outside the data root ({ALLOW_OUTSIDE_HINT})").add(
                f"{where}: {mask!r} {problem}"
            )
            exists = False
        else:
            exists = root.path(mask).is_file()
        found += exists
        if label == 1 and not exists:
            report.finding(
                "missing_mask", "note", "fake frame without a forgery mask file ('frames' -> 'masks'); only a mode "
                "that needs masks (forensics_adapter) refuses it",
            ).add(f"{where}: {mask or str(raw) + ' (no frames folder)'}")  # fmt: skip
    return found


def _check_frames(report: DatasetReport, frames: list[tuple[str, Path]], mode: ImageCheck, progress: bool) -> None:
    seen: set[Path] = set()
    for raw, path in tqdm(frames, desc=f"check {report.dataset}", unit="frame", disable=not progress):
        if path in seen:
            continue
        seen.add(path)
        try:
            check_image(path, mode)
        except FrameMissingError:
            report.finding("missing_frame", "error", "frame file does not exist").add(f"{raw} -> {path}")
        except FrameDecodeError:
            what = "header is not a readable image" if mode == "header" else "cannot be decoded"
            report.finding("unreadable_frame", "error", f"frame file {what}").add(str(path))


def format_report(report: DatasetReport) -> str:
    """Human-readable findings, most severe first."""
    order = {"error": 0, "warning": 1, "note": 2}
    lines = [f"{report.dataset} ({report.json_path}):"]
    if all(f.severity == "note" for f in report.findings.values()):
        lines.append("  ok: no problems found" + (" (notes below)" if report.findings else ""))
    for f in sorted(report.findings.values(), key=lambda f: (order[f.severity], f.kind)):
        lines.append(f"  {f.severity.upper()} {f.kind}: {f.count} - {f.message}")
        lines += [f"      e.g. {e}" for e in f.examples]
        if f.count > len(f.examples):
            lines.append(f"      ... and {f.count - len(f.examples)} more")
    coverage = mask_coverage_by_label(report)
    if coverage:
        cells = [f"{label} {masks}/{frames}" for label, (frames, masks) in coverage.items()]
        lines.append(f"  masks (frames with a mask file, all splits): {', '.join(cells)}; real frames need none")
    return "\n".join(lines)


def mask_coverage_by_label(report: DatasetReport) -> dict[str, tuple[int, int]]:
    """``{label string: (frames, frames with a mask file)}`` over all splits; empty when masks were not checked."""
    out: dict[str, list[int]] = {}
    for (_, label, _), stats in report.stats.items():
        if stats.masks is not None:
            cell = out.setdefault(label, [0, 0])
            cell[0] += stats.frames
            cell[1] += stats.masks
    return {k: (v[0], v[1]) for k, v in out.items()}


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def _split_rank(split: str) -> int:
    return SPLITS.index(split) if split in SPLITS else len(SPLITS)


def summarize(reports: Iterable[DatasetReport], label_dict: Mapping[str, int] | None = None) -> str:
    """A table of videos, frames and mask files per dataset, label group (with its label) and split.

    ``masks`` is ``-`` where masks were not counted (no data root).
    """
    labels = canonical_labels(label_dict)
    names = {0: "real", 1: "fake"}
    rows = [("dataset", "label group", "label", "split", "videos", "frames", "masks")]
    totals: dict[tuple[str, str, str], list[int | None]] = defaultdict(lambda: [0, 0, None])
    for report in reports:
        lookup = get_format(report.format).label_value
        for (group, label, split), s in sorted(report.stats.items(), key=lambda kv: (kv[0][0], _split_rank(kv[0][2]))):
            value = lookup(label, labels)
            shown = f"{label} ({names.get(value, value) if value is not None else 'UNKNOWN'})"
            rows.append((report.dataset, group, shown, split, str(s.videos), str(s.frames), _count(s.masks)))
            kind = names.get(value, "unknown") if value is not None else "unknown"
            total = totals[(report.dataset, kind, split)]
            total[0] += s.videos
            total[1] += s.frames
            if s.masks is not None:
                total[2] = (total[2] or 0) + s.masks
    order = {name: i for i, name in enumerate(dict.fromkeys(k[0] for k in totals))}

    def rank(key: tuple[str, str, str]) -> tuple[int, str, int]:
        return order[key[0]], key[1], _split_rank(key[2])

    for (dataset, kind, split), (videos, frames, masks) in sorted(totals.items(), key=lambda kv: rank(kv[0])):
        rows.append((dataset, "= all", kind, split, str(videos), str(frames), _count(masks)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


__all__ = ["DatasetReport", "Finding", "format_report", "mask_coverage_by_label", "summarize", "validate_dataset"]
