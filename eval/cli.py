"""``clip-eval``: score detectors and merges cross-dataset, rebuild reports, build uniform/greedy soups.

    clip-eval ingredients/a ingredients/b merged/ties --datasets Celeb-DF-v2 DFDC \\
        --json-root dataset_json --data-root datasets --out reports/run1
    clip-eval report reports/run1/predictions --video-id parent --out reports/run1-dfb
    clip-eval soup --method greedy ingredients/* --val FaceForensics++ \\
        --json-root dataset_json --data-root datasets --out soups/greedy
    torchrun --nproc_per_node 2 -m eval ingredients/a --datasets Celeb-DF-v2 ... --out reports/ddp

The first form has no sub-command name: a first argument that is not ``report``/``soup``/``score`` is read as
a model dir of ``score``. Exit status 0 on success, 1 on a failure (message names the file), 2 on bad usage.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

import click
import numpy as np
from pydantic import Field

from eval.soup import SOUP_CLI_FIELDS, SoupConfig
from mergekit_clip.metrics import VIDEO_AGGREGATES, selection_metric_names
from mergekit_clip.options import (
    DataOptions,
    RunOptions,
    choice_option,
    click_options,
    option_for,
    options_from,
    resolve_device,
    uses_bf16,
)

_VIDEO_ID = choice_option(
    "--video-id", ["full", "parent"], "full", "video = full frame directory, or only its name (DeepfakeBench's pooling)"
)
_VIDEO_AGGREGATE = choice_option(
    "--video-aggregate", VIDEO_AGGREGATES, "mean", "how a video's frame P(fake) are pooled for video-level metrics"
)

_GREEDY_OPTIONS = ("--datasets",)  # options that take several values: `--datasets A B` = `--datasets A --datasets B`


def _expand_multi_value(args: list[str]) -> list[str]:
    out: list[str] = []
    current = None
    for arg in args:
        if arg in _GREEDY_OPTIONS:
            current = arg
            continue
        if current is not None and not arg.startswith("-"):
            out += [current, arg]
            continue
        if current is not None and arg.startswith("-"):
            current = None
        out.append(arg)
    return out


class _DefaultGroup(click.Group):
    """A group whose default sub-command is ``score``, so ``clip-eval MODEL... --datasets ...`` works."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["score", *args]
        return super().parse_args(ctx, _expand_multi_value(args))


def _split_names(values: tuple[str, ...]) -> list[str]:
    """``--datasets A,B`` and repeated ``--datasets`` both work; order kept, duplicates dropped."""
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    return list(dict.fromkeys(names))


class SoupDataOptions(DataOptions):
    """``clip-eval soup``'s frames: only needed for ``--val`` (a uniform soup reads no data)."""

    json_root: Path | None = Field(None, description="folder of DeepfakeBench <Dataset>.json files (for --val)")
    data_root: Path | None = Field(None, description="root the relative frame paths resolve against (for --val)")


def _max_failed_share(f):
    return click.option(
        "--max-failed-share",
        type=click.FloatRange(0, 1),
        default=0.05,
        show_default=True,
        help="largest share of a dataset's frames that may be missing or undecodable (more = error, no report)",
    )(f)


def _run_options(f):
    """RunOptions (device, precision, batch size, workers: the names clip-train's config uses) + eval's own."""
    f = choice_option(
        "--resize",
        ["exact", "fast"],
        "exact",
        "exact = the training eval transform's resize; fast = OpenCV on uint8 (P(fake) differ by ~1e-3)",
    )(f)
    f = click_options(RunOptions)(f)
    f = click.option(
        "--fail-on-undecodable", is_flag=True, help="an undecodable frame is an error, not a counted failure"
    )(f)
    f = click.option(
        "--cache-mb", type=click.FloatRange(min=0), default=2048, show_default=True, help="decoded-frame cache"
    )(f)
    return f


def _predictor(run: RunOptions, device: str, cache_mb: float, fail_on_undecodable: bool, **kwargs):
    from eval.predict import FrameCache, Predictor

    bf16 = uses_bf16(run.precision, device)
    return Predictor(device, bf16, run.batch_size, run.workers, FrameCache(cache_mb), fail_on_undecodable, **kwargs)


def _robustness_options(f):
    f = click.option(
        "--threshold-val",
        default=None,
        metavar="DATASET",
        help="choose each model's threshold on DATASET's val split (source domain); reported as acc_val_threshold",
    )(f)
    f = _VIDEO_AGGREGATE(f)
    f = click.option(
        "--perturb-seed", type=int, default=0, show_default=True, help="seed of the perturbations' randomness"
    )(f)
    f = click.option(
        "--perturb",
        "perturb",
        multiple=True,
        help="also score under perturbations: a suite (deeperforensics, deeperforensics_any_size, gend, gend_extra) "
        "or NAME:LEVEL, e.g. GB:9 (repeatable)",
    )(f)
    return f


def _parse_perturbations(specs: tuple[str, ...]) -> list:
    from mergekit_clip.data.perturbations import PerturbationError, expand_perturbations

    try:
        return expand_perturbations(list(specs))
    except PerturbationError as e:
        raise click.BadParameter(str(e), param_hint="--perturb") from e


def _load_records(dataset: str, split: str, data: DataOptions):
    try:
        from mergekit_clip.data.deepfakebench import DatasetError
        from mergekit_clip.data.formats import load_frames
    except ImportError as e:  # the data package is a sibling component; say what is missing
        raise click.ClickException(f"the DeepfakeBench reader is unavailable ({e})") from e
    try:
        records = load_frames(
            dataset,
            split,
            json_root=Path(data.json_root),
            data_root=Path(data.data_root),
            frame_num=data.frame_num,
            compression=data.compression,
            allow_outside_root=data.allow_outside_root,
            follow_symlinks=data.follow_symlinks,
        )
    except (DatasetError, ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from e
    if not records:
        raise click.ClickException(f"dataset {dataset!r} has no frames in split {split!r} ({data.json_root})")
    return records


def _check_models(dirs: tuple[str, ...]) -> None:
    from mergekit_clip.detector.io import DetectorFormatError, detector_spec

    for d in dirs:
        try:
            spec = detector_spec(d)
        except DetectorFormatError as e:
            raise click.ClickException(f"{d} is not a detector: {e}") from e
        if spec.head is None:
            raise click.ClickException(f"{d} has no forensic head: a bare backbone is not a detector")


def _with_label_groups(records: list, dataset: str, split: str, data: DataOptions) -> list:
    """Per-group AUC needs the label groups the DeepfakeBench JSON files videos under; other formats have none."""
    from eval.groups import with_label_groups
    from mergekit_clip.data.formats import dataset_format

    if dataset_format(dataset, data.json_root).name != "deepfakebench":
        return records
    return with_label_groups(records, dataset, split, data.json_root, data.compression)


def _dataset_sha(json_root: str, dataset: str) -> str | None:
    from mergekit_clip.data.deepfakebench import DatasetError
    from mergekit_clip.data.formats import dataset_identity

    try:  # the files the dataset was read from, whichever format holds it
        return dataset_identity(dataset, json_root).digest
    except DatasetError:
        return None


@click.group(cls=_DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Score CLIP deepfake detectors and their merges cross-dataset; build soups; rebuild reports.

    `clip-eval MODEL_DIR... --datasets NAME...` runs `score` (the default command).
    """


# long: the command is its option list plus the scoring loop over models; the loop is what a reader checks
@main.command("score")
@click.argument("model_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--datasets", "datasets", multiple=True, required=True, help="test datasets (space or comma separated)")
@click_options(DataOptions)
@_max_failed_share
@choice_option("--split", ["train", "val", "test"], "test", "split of --datasets to score")
@_VIDEO_ID
@_run_options
@_robustness_options
@click.option("--out", "out", type=click.Path(file_okay=False), required=True, help="report folder (new)")
@click.option("--overwrite", is_flag=True, help="replace an existing report folder")
def score_command(
    model_dirs,
    datasets,
    max_failed_share,
    split,
    video_id,
    resize,
    fail_on_undecodable,
    cache_mb,
    perturb,
    perturb_seed,
    video_aggregate,
    threshold_val,
    out,
    overwrite,
    **options,
) -> None:
    """Score MODEL_DIRS (detector dirs, mergekit outputs, HF CLIP classifier dirs) on --datasets; write --out."""
    from eval.boundary import boundary_panel, predicts_boundaries, trained_gated
    from eval.predict import (
        FrameDecodeError,
        TooManyFailedFramesError,
        check_failures,
        frame_failures,
        missing_frames,
    )
    from eval.provenance import model_provenance, unique_names
    from eval.report import score_predictions, write_report
    from mergekit_clip.detector.io import DetectorFormatError, load_detector, read_config_json
    from mergekit_clip.distributed import init_distributed, shutdown

    data, run = options_from(DataOptions, options), options_from(RunOptions, options)
    json_root, frame_num, compression = data.json_root, data.frame_num, data.compression
    if Path(out).exists() and not overwrite:
        raise click.ClickException(f"report folder {out} already exists (pass --overwrite to replace it)")
    _check_models(model_dirs)
    names = _split_names(datasets)
    records = {d: _load_records(d, split, data) for d in names}
    try:  # a wrong --data-root is found here, before any model is loaded or frame decoded
        for d in names:
            check_failures(missing_frames(d, [str(r.path) for r in records[d]]), max_failed_share)
    except TooManyFailedFramesError as e:
        raise click.ClickException(str(e)) from e
    from mergekit_clip.metrics import choose_threshold

    perturbations = _parse_perturbations(perturb)
    records = {d: _with_label_groups(records[d], d, split, data) for d in names}
    val_records = None
    if threshold_val:
        val_records = _load_records(threshold_val, "val", data)
    device = resolve_device(run.device)
    ctx = init_distributed(device)
    try:
        device = ctx.device(device)
        predictor = _predictor(
            run, device, cache_mb, fail_on_undecodable, dist=ctx, resize=resize, perturb_seed=perturb_seed
        )
        preds, boundaries = [], []
        for name, model_dir in zip(unique_names(list(model_dirs)), model_dirs):
            try:
                model = load_detector(model_dir, device=device)
            except DetectorFormatError as e:
                raise click.ClickException(str(e)) from e
            prov = {
                "resize": resize,
                **model_provenance(model_dir),
                "device": device,
                "dtype": predictor.dtype_name,
                "world_size": ctx.world_size,
            }
            if val_records is not None:
                val = predictor.predict(model, val_records, name, threshold_val)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # a one-class val split gives nan: acc_val_threshold is n/a
                    threshold = choose_threshold(val.labels[val.ok], val.scores[val.ok])
                prov["val_threshold"] = None if np.isnan(threshold) else threshold
                prov["val_threshold_source"] = f"{threshold_val}/val (max Youden J)"
            for dataset in names:
                meta: dict[str, Any] = {
                    **prov,
                    "split": split,
                    "frame_num": frame_num,
                    "compression": compression,
                    "dataset_sha256": _dataset_sha(json_root, dataset),
                }
                try:
                    pred = predictor.predict(model, records[dataset], name, dataset, **meta)
                    failures = check_failures(frame_failures(dataset, pred.paths, pred.ok), max_failed_share)
                except (FrameDecodeError, TooManyFailedFramesError) as e:
                    raise click.ClickException(f"{name} on {dataset}: {e}") from e
                bad = int((~np.isfinite(np.asarray(pred.scores, dtype=np.float64)[np.asarray(pred.ok)])).sum())
                if bad:  # named here, not as a metric's ValueError far from its cause
                    raise click.ClickException(f"{name} ({model_dir}) on {dataset}: {bad} non-finite score(s); "
                                               "check its config.json preprocessing and weights")  # fmt: skip
                preds.append(pred)
                if ctx.is_main:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        line = score_predictions(pred, video_id, video_aggregate)
                        line = {k: v for k, v in line.items() if k != "warnings"}
                    line = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in line.items()}
                    click.echo(json.dumps({"model": name, "dataset": dataset, **line}))
                    if failures.failed:
                        click.echo(
                            f"warning: {dataset}: {failures.failed} of {failures.total} frame(s) skipped: "
                            f"{failures.describe()}",
                            err=True,
                        )
                preds += _score_perturbed(predictor, model, records[dataset], name, dataset, perturbations, meta, ctx)
                if ctx.is_main and predicts_boundaries(model):  # ForensicsAdapter: frame, mask, predicted boundary
                    gated = trained_gated(read_config_json(model_dir))
                    boundaries.append(boundary_panel(model, records[dataset], name, dataset, gated))
            del model
        if ctx.is_main:
            boundaries = [b for b in boundaries if b is not None]
            write_report(
                preds, out, video_id=video_id, overwrite=overwrite, aggregate=video_aggregate, boundaries=boundaries
            )
            click.echo(f"report written to {out}", err=True)
        ctx.barrier()
    finally:
        shutdown()


def _score_perturbed(predictor, model, records, name, dataset, perturbations, meta, ctx) -> list:
    """One prediction set per perturbation (frames perturbed in the data workers, decoded once), a JSON line each."""
    from eval.predict import FrameDecodeError
    from eval.robustness import predict_perturbed, score_perturbed

    if not perturbations:
        return []
    try:
        out = predict_perturbed(predictor, model, records, name, dataset, perturbations, **meta)
    except FrameDecodeError as e:
        raise click.ClickException(f"{name} on {dataset} (--perturb): {e}") from e
    for perturbation, pred in zip(perturbations, out):
        if ctx.is_main:
            line = {"model": name, "dataset": dataset, "perturbation": perturbation.key, **score_perturbed(pred)}
            click.echo(json.dumps(line))
    return out


@main.command("report")
@click.argument("predictions", nargs=-1, required=True, type=click.Path(exists=True))
@_VIDEO_ID
@click.option("--out", "out", type=click.Path(file_okay=False), required=True, help="report folder (new)")
@_VIDEO_AGGREGATE
@click.option("--overwrite", is_flag=True, help="replace an existing report folder")
def report_command(predictions, video_id, out, video_aggregate, overwrite) -> None:
    """Rebuild a report from saved per-frame PREDICTIONS (files, prediction folders or report folders)."""
    from eval.report import ReportError, collect_prediction_files, load_predictions, write_report

    try:
        files = collect_prediction_files(predictions)
        preds = [load_predictions(f) for f in files]
        write_report(preds, out, video_id=video_id, overwrite=overwrite, aggregate=video_aggregate)
    except (ReportError, FileExistsError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"report written to {out} ({len(preds)} prediction sets)", err=True)


@main.command("soup")
@click.argument("ingredients", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--method", type=click.Choice(["uniform", "greedy"]), required=True,
              help="uniform = average every ingredient; greedy = model-soups' greedy recipe on --val")
@click.option("--val", "val_dataset", default=None, help="dataset whose held-out split ranks ingredients")
@click.option("--val-split", default="val", show_default=True, help="held-out split (never test)")
@choice_option(
    "--metric",
    selection_metric_names,
    "frame_auc",
    "held-out metric that ranks and admits ingredients (mergekit_clip.metrics registry)",
)
@choice_option(
    "--tie-rule", ["keep", "drop"], "drop", "greedy: does a candidate whose soup ties the best held-out score join?"
)
@click_options(SoupConfig, exclude=[f for f in SoupConfig.model_fields if f not in SOUP_CLI_FIELDS])
@click_options(SoupDataOptions)
@_run_options
@click.option("--out", "out", type=click.Path(file_okay=False), required=True, help="soup detector dir (new)")
@click.option("--overwrite", is_flag=True, help="replace an existing soup folder")
def soup_command(
    ingredients,
    method,
    val_dataset,
    val_split,
    metric,
    tie_rule,
    resize,
    fail_on_undecodable,
    cache_mb,
    out,
    overwrite,
    **options,
) -> None:
    """Average INGREDIENTS into a soup detector (mergekit linear, in process), with its selection log."""
    from pydantic import ValidationError

    from eval.soup import check_ingredients

    data, run = options_from(SoupDataOptions, options), options_from(RunOptions, options)
    if Path(out).exists() and not overwrite:
        raise click.ClickException(f"{out} already exists (pass --overwrite to replace it)")
    try:
        config = SoupConfig(
            method=method, metric=metric, tie_rule=tie_rule, val_dataset=val_dataset, val_split=val_split,
            **{k: options[k] for k in SOUP_CLI_FIELDS},
        )  # fmt: skip
        check_ingredients(list(ingredients))
    except (ValidationError, ValueError) as e:
        raise click.ClickException(str(e)) from e
    for flag, dataset in (("--val", config.val_dataset), ("--threshold-val", config.threshold_val)):
        if dataset and not (data.json_root and data.data_root):
            raise click.UsageError(f"{flag} needs --json-root and --data-root")
    predictor = _predictor(run, resolve_device(run.device), cache_mb, fail_on_undecodable, resize=resize)
    records, val_note = None, None
    if config.val_dataset:
        records = _load_records(config.val_dataset, config.val_split, data)
        from eval.predict import DEFAULT_MAX_FAILED_SHARE, TooManyFailedFramesError, check_failures, missing_frames

        try:  # a wrong --data-root must not rank ingredients on blank frames
            paths = [str(r.path) for r in records]
            check_failures(missing_frames(config.val_dataset, paths), DEFAULT_MAX_FAILED_SHARE)
        except TooManyFailedFramesError as e:
            raise click.ClickException(str(e)) from e
        val_note = _val_overlap_note(config.val_dataset, records, data)
        if val_note:
            click.echo(f"warning: {val_note}", err=True)
    from eval.soup_run import run_soup

    path = run_soup(
        list(ingredients),
        config,
        predictor,
        records,
        out,
        overwrite,
        val_note,
        dataset_sha256=_dataset_sha(data.json_root, config.val_dataset) if config.val_dataset else None,
        threshold_records=_load_records(config.threshold_val, "val", data) if config.threshold_val else None,
    )
    click.echo(f"soup written to {path}", err=True)


@main.command("learn-merge")
@click.argument("ingredients", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--base", type=click.Path(exists=True, file_okay=False), default=None,
              help="the family's base (task_arithmetic: task vectors are taken against it)")
@choice_option("--form", ["linear", "task_arithmetic"], "linear",
               "linear = learned soup (softmax weights per layer group); task_arithmetic = AdaMerging lambdas")
@choice_option("--objective", ["labelled", "entropy"], "labelled",
               "labelled = cross-entropy on labelled frames; entropy = prediction entropy on unlabelled target "
               "frames (transductive: the output says so)")
@click.option("--dataset", required=True, help="the frames the coefficients are fitted on")
@choice_option("--split", ["train", "val", "test"], "val",
               "its split (labelled: never test; entropy: the target split, its labels never read)")
@click.option("--steps", default=50, show_default=True, type=click.IntRange(min=1), help="optimizer steps")
@click.option("--lr", default=0.05, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Adam learning rate of the merge coefficients")
@option_for("batch_size", RunOptions.model_fields["batch_size"])
@click.option("--max-frames", default=512, show_default=True, type=click.IntRange(min=1),
              help="frames fitted on, evenly spaced over the split")
@click.option("--init", default=0.3, show_default=True, help="task_arithmetic: every lambda's start")
@click.option("--seed", default=0, show_default=True, help="seeds the frame batches")
@option_for("device", RunOptions.model_fields["device"])
@click_options(DataOptions)
@click.option("--out", "out", type=click.Path(file_okay=False), required=True,
              help="new folder: model/ (the merged detector), recipe.yml (stock mergekit), learned.json")
@click.option("--overwrite", is_flag=True, help="replace an existing output folder")
def learn_merge_command(ingredients, base, form, objective, dataset, split, steps, lr, batch_size, max_frames, init,
                        seed, device, out, overwrite, **options) -> None:  # fmt: skip
    """Learn per-ingredient, per-layer-group merge coefficients of INGREDIENTS by gradient descent; write the
    merged detector and the stock mergekit recipe that reproduces it (mergekit-yaml OUT/recipe.yml DIR)."""
    import shutil

    import torch

    from eval.learned_merge import LearnedMergeError, LearnOptions, learn_merge, load_frames, write_learned_merge
    from mergekit_clip.detector.io import detector_spec

    data = options_from(DataOptions, options)
    if objective == "labelled" and split == "test":
        raise click.UsageError("--split test with --objective labelled would fit on test labels: use val or train")
    if Path(out).exists() and not overwrite:
        raise click.ClickException(f"{out} already exists (pass --overwrite to replace it)")
    _check_models(tuple(ingredients))
    records = _load_records(dataset, split, data)
    if len(records) > max_frames:
        records = [records[round(i * (len(records) - 1) / (max_frames - 1))] for i in range(max_frames)]
    frames = load_frames([str(r.path) for r in records], detector_spec(ingredients[0]).preprocess)
    labels = torch.tensor([int(r.label) for r in records]) if objective == "labelled" else None
    try:
        result = learn_merge(list(ingredients), frames, labels, LearnOptions(
            form=form, objective=objective, steps=steps, lr=lr, batch_size=batch_size, init=init, seed=seed,
            device=resolve_device(device)), base=base)  # fmt: skip
    except LearnedMergeError as e:
        raise click.ClickException(str(e)) from e
    if Path(out).exists():
        shutil.rmtree(out)
    kind = " (transductive: fitted on the target frames)" if result.transductive else ""
    model = write_learned_merge(result, Path(out), header=f"learned {form} merge on {dataset}/{split}{kind}")
    click.echo(f"learned merge written to {model}; recipe: {Path(out) / 'recipe.yml'}{kind}", err=True)


def _val_overlap_note(dataset: str, val_records, data: DataOptions) -> str | None:
    """DeepfakeBench files often make val == test (Celeb-DF, DFDCP): selecting on it is an oracle, say so."""
    try:
        test = _load_records(dataset, "test", data)
    except click.ClickException:
        return None
    val_paths, test_paths = {str(r.path) for r in val_records}, {str(r.path) for r in test}
    shared = len(val_paths & test_paths)
    if not shared:
        return None
    same = "is identical to" if val_paths == test_paths else f"shares {shared} of {len(val_paths)} frames with"
    return f"{dataset} val split {same} its test split: selection on it is not held out from {dataset} test"


if __name__ == "__main__":
    sys.exit(main())
