"""The benchmarks' ``--device``: the same name and choices as the commands' (auto = cuda when torch sees one)."""

from __future__ import annotations

import click
import torch

DEVICES = ("auto", "cpu", "cuda")


def resolve(device: str) -> str:
    """``cpu`` or ``cuda``: ``auto`` picks cuda when torch sees a GPU; an explicit ``cuda`` without one is refused."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise click.UsageError("--device cuda: torch sees no CUDA device (use cpu or auto)")
    return device


def device_option(help_text: str = "where the measured work runs") -> click.decorators.FC:
    """``--device auto|cpu|cuda`` (default auto), handed to the command already resolved to cpu or cuda."""
    return click.option(
        "--device", type=click.Choice(DEVICES), default="auto", show_default=True,
        callback=lambda _ctx, _param, value: resolve(value), help=f"{help_text}; auto = cuda when available",
    )  # fmt: skip
