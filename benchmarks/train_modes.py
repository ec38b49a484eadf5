"""Training cost of every fine-tuning mode against full fine-tuning, and merge time of a family that shares tensors.

Per backbone and mode: optimizer steps (forward, backward, AdamW) on one fixed random batch, each mode in its own
process so that the peak resident memory (``ru_maxrss``) is that mode's alone. The modes run interleaved, in
``--repeats`` rounds (order rotated each round); images/s (wall) and its speed ratio to ``full_finetune`` of the
same round are printed as median [range] over the rounds, beside the same ratio of process CPU time (the figure
to trust on a shared machine, see benchmarks/_timing.py). Weights are random (no download): speed and memory do
not depend on their values.

Merge: a base and 3 ingredients, either all tensors changed (a full-fine-tune family) or only the LayerNorm and head
tensors (a ``layernorm`` family), merged in process by mergekit's ``run_merge`` with the plugin; tensors equal in
every input pass through unmerged (the plugin's identity shortcut), so the second family merges faster.

    python -m benchmarks.train_modes                   # tiny and ViT-B/16 on CPU, 5 rounds (~15 min)
    python -m benchmarks.train_modes --quick           # tiny only, for a smoke run
    python -m benchmarks.train_modes --backbones ViT-L-14 --device cuda --batch 32   # on a GPU
"""

from __future__ import annotations

import json
import logging
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import click
import torch

from benchmarks._device import device_option
from benchmarks._timing import REPEATS, Sample, interleaved, measure, ratio_columns, speed_ratio, times
from mergekit_clip.detector.io import create_detector, save_detector
from mergekit_clip.detector.spec import BackboneSpec, DetectorSpec, PreprocessSpec, spec_from_open_clip
from train.modes import MODES
from train.modes.adaptation import is_layernorm_parameter

TINY = DetectorSpec(
    backbone=BackboneSpec(image_size=64, patch_size=8, width=128, layers=4, heads=4, embed_dim=64),
    preprocess=PreprocessSpec(image_size=64),
)


def backbone_spec(name: str) -> DetectorSpec:
    return TINY if name == "tiny" else spec_from_open_clip(name, quick_gelu=True)


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def measure_mode(backbone: str, mode: str, batch: int, steps: int, device: str, bf16: bool) -> dict:
    """One mode's throughput (images/s over ``steps`` after one warm-up step) and peak memory."""
    torch.manual_seed(0)
    spec = backbone_spec(backbone)
    model = create_detector(spec, seed=0).to(device)
    adaptation = MODES[mode].adapt(model, MODES[mode].options(), 0)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    size = spec.preprocess.image_size
    images = torch.randn(batch, 3, size, size, device=device)
    labels = torch.arange(batch, device=device) % 2
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step() -> None:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            logits = model(images)
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def timed() -> None:
        for _ in range(steps):
            step()
        if device == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up: allocator, optimizer state
    if device == "cuda":
        torch.cuda.synchronize()
    _, sample = measure(timed)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else _peak_mib()
    return {
        "backbone": backbone,
        "mode": mode,
        "wall_s": sample.wall,
        "cpu_s": sample.cpu,
        "images": batch * steps,
        "peak_mib": peak,
        "trainable": adaptation.provenance["trainable_parameters"],
    }


def parameter_counts(arch: str) -> dict[str, dict]:
    """Each mode's provenance counts (default options) for an open_clip geometry built on the meta device."""
    out = {}
    for name, mode in MODES.items():
        with torch.device("meta"):  # shapes only: no weights, no download
            model = create_detector(spec_from_open_clip(arch, quick_gelu=True), seed=None)
            out[name] = mode.adapt(model, mode.options(), 0).provenance
    return out


def _family(root: Path, spec: DetectorSpec, shared: bool, n: int = 3) -> tuple[Path, list[Path]]:
    """A base and ``n`` ingredients; ``shared``: only LayerNorm and head tensors differ from the base."""
    base = create_detector(spec, seed=0)
    save_detector(base, root / "base")
    paths = []
    for i in range(n):
        model = create_detector(spec, seed=0)
        gen = torch.Generator().manual_seed(100 + i)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if not shared or is_layernorm_parameter(name) or name.startswith("head."):
                    p.add_(torch.randn(p.shape, generator=gen) * 0.01)
        save_detector(model, root / f"ft{i}")
        paths.append(root / f"ft{i}")
    return root / "base", paths


def measure_merge(backbone: str, method: str, repeats: int = REPEATS) -> dict[str, list[Sample]]:
    """Seconds of in-process merges of a full-fine-tune family and of a layernorm family (same geometry), the two
    interleaved over ``repeats`` rounds."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    import mergekit_clip.plugin as plugin

    plugin.register()
    logging.disable(logging.WARNING)  # mergekit's and the plugin's per-merge notes would drown the table
    spec = backbone_spec(backbone)
    with tempfile.TemporaryDirectory() as tmp:
        configs = {}
        for kind, shared in (("full_finetune", False), ("layernorm", True)):
            root = Path(tmp) / kind
            base, models = _family(root, spec, shared)
            params = {"weight": 1.0, "density": 0.5} if method == "ties" else {"weight": 1.0 / len(models)}
            configs[kind] = (root, MergeConfiguration.model_validate({
                "merge_method": method, "base_model": str(base), "dtype": "float32",
                "models": [{"model": str(m), "parameters": params} for m in models],
            }))  # fmt: skip

        def merge(kind: str) -> Sample:
            root, config = configs[kind]
            shutil.rmtree(root / "merged", ignore_errors=True)
            options = MergeOptions(random_seed=0, quiet=True, copy_tokenizer=False)
            return measure(lambda: run_merge(config, str(root / "merged"), options=options))[1]

        return interleaved({kind: (lambda k=kind: merge(k)) for kind in configs}, repeats)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--backbones", default="tiny,ViT-B-16", show_default=True, help="comma list: tiny or open_clip names")
@click.option("--modes", default="full_finetune,layernorm,lora,svd_residual,bitfit", show_default=True)
@click.option("--batch", default=8, show_default=True, help="images per step")
@click.option("--steps", default=3, show_default=True, help="timed steps after one warm-up step")
@device_option()
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True,
              help="bf16 = autocast, as clip-train's precision key")  # fmt: skip
@click.option("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
@click.option("--merge-methods", default="task_arithmetic,ties", show_default=True)
@click.option("--repeats", default=REPEATS, show_default=True, help="interleaved rounds (median and range printed)")
@click.option("--quick", is_flag=True, help="tiny backbone only")
@click.option("--worker", hidden=True, default=None, help="internal: measure one backbone:mode and print JSON")
def main(backbones, modes, batch, steps, device, precision, threads, merge_methods, repeats, quick, worker) -> None:
    bf16 = precision == "bf16"
    if threads:
        torch.set_num_threads(threads)
    if worker:
        backbone, mode = worker.split(":")
        print(json.dumps(measure_mode(backbone, mode, batch, steps, device, bf16)))
        return
    click.echo("trainable parameters, default options, meta-device build (vision tower; the head adds 2 x width + 2)")
    for arch in ("ViT-B-16", "ViT-L-14"):
        for name, c in parameter_counts(arch).items():
            click.echo(
                f"{arch:10} {name:14} {c['trainable_visual_parameters']:>12,} "
                f"{100 * c['trainable_visual_share']:>8.4f} % of the tower"
            )
    names = ["tiny"] if quick else backbones.split(",")
    modes_list = modes.split(",")
    if "full_finetune" not in modes_list:
        modes_list.insert(0, "full_finetune")  # the baseline of every ratio
    flags = ["--batch", str(batch), "--steps", str(steps), "--device", device, "--precision", precision]
    flags += ["--threads", str(threads)] if threads else []
    click.echo(f"training steps: batch {batch}, {steps} timed steps, device {device}, bf16 {bf16}, {repeats} "
               "interleaved rounds; speed against full_finetune of the same round, median [range]")  # fmt: skip
    click.echo(f"{'backbone':10} {'mode':14} {'trainable':>12} {'images/s':>20}  speed x full (wall, CPU)   "
               f"{'peak MiB':>9} {'x full':>6}")  # fmt: skip
    for backbone in names:

        def run_worker(mode: str, backbone: str = backbone) -> dict:
            cmd = [sys.executable, "-m", "benchmarks.train_modes", "--worker", f"{backbone}:{mode}", *flags]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            return json.loads(proc.stdout.strip().splitlines()[-1])

        rows: dict[str, list[dict]] = {m: [] for m in modes_list}
        for r in range(repeats):  # interleaved: every mode once per round, the order rotated
            for k in range(len(modes_list)):
                mode = modes_list[(r + k) % len(modes_list)]
                rows[mode].append(run_worker(mode))
        per_image = {m: [Sample(x["wall_s"], x["cpu_s"]).per(x["images"]) for x in xs] for m, xs in rows.items()}
        ref_peak = max(x["peak_mib"] for x in rows["full_finetune"])
        for mode, xs in rows.items():
            rate = times([Sample(1 / s.wall, 1 / s.cpu) for s in per_image[mode]], "wall")
            peak = max(x["peak_mib"] for x in xs)
            click.echo(
                f"{backbone:10} {mode:14} {xs[0]['trainable']:>12,} {rate.text('.1f'):>20}  "
                f"{ratio_columns(per_image[mode], per_image['full_finetune'])}  {peak:>9.0f} {peak / ref_peak:>6.2f}"
            )
    click.echo(f"merge (in process, base + 3 ingredients, {repeats} interleaved rounds): layernorm family against "
               "the full-fine-tune family")  # fmt: skip
    for backbone in names:
        for method in merge_methods.split(","):
            m = measure_merge(backbone, method, repeats)
            full, ln = times(m["full_finetune"], "wall"), times(m["layernorm"], "wall")
            click.echo(
                f"{backbone:10} {method:16} full {full.text('.2f', ' s')}  layernorm {ln.text('.2f', ' s')}  "
                f"speed-up wall {speed_ratio(m['layernorm'], m['full_finetune'], 'wall').ratio_text()}  "
                f"CPU {speed_ratio(m['layernorm'], m['full_finetune'], 'cpu').ratio_text()}"
            )


if __name__ == "__main__":
    main()
