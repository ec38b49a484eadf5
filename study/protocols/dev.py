"""``dev``: named labelled development datasets, neither source nor test.

A dev set is refused when it shares a dataset name (the study file's check), a video id or a frame file (here,
before any model is scored on it) with a test set: the held-out sets and the sources' test split. The overlap
check reads the test splits' frame paths and video ids, never their labels."""

from __future__ import annotations

from study.protocols import ProtocolKind, ProxyScores, labelled_proxy


class DevOverlapError(ValueError):
    """A dev set shares videos or frame files with a test set."""


def _resolved(path) -> str:
    from pathlib import Path

    return str(Path(path).resolve())


def check_no_test_overlap(run, name: str, config) -> None:
    """Raise :class:`DevOverlapError` naming the dev set, the test set and an example shared video or frame."""
    tests = run.test_pairs()
    test_videos: dict[str, str] = {}
    test_frames: dict[str, str] = {}
    for dataset, split in tests:
        for r in run.loader(dataset, split):
            test_videos.setdefault(str(r.video_id), f"{dataset}/{split}")
            test_frames.setdefault(_resolved(r.path), f"{dataset}/{split}")
    for dataset in config.datasets:
        for r in run.loader(dataset, config.split):
            where = f"selection.protocols.{name}: dev set {dataset}/{config.split}"
            if str(r.video_id) in test_videos:
                raise DevOverlapError(f"{where} shares video {r.video_id!r} with test set "
                                      f"{test_videos[str(r.video_id)]}: choose a dev set disjoint from every test set")
            frame = _resolved(r.path)
            if frame in test_frames:
                raise DevOverlapError(f"{where} shares frame file {frame} with test set {test_frames[frame]}: "
                                      "choose a dev set disjoint from every test set")  # fmt: skip


class Dev(ProtocolKind):
    kind = "dev"

    def describe(self, name, config, study) -> str:
        return f"{config.metric} on labelled dev set(s) {', '.join(config.datasets)} ({config.split} split)"

    def score_models(self, run, name, config, entries) -> ProxyScores:
        check_no_test_overlap(run, name, config)
        pairs = [(d, config.split) for d in config.datasets]
        per_model = {e.name: {d: s for (d, _), s in run.score(e, pairs).items()} for e in entries}
        return labelled_proxy(name, self.kind, config, per_model, self.describe(name, config, run.study))


PROTOCOL = Dev()
