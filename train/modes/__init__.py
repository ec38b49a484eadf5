"""Training modes of ``clip-train``: one file per mode, one registration line each (see :mod:`.registry`)."""

from train.modes import (
    bitfit,
    forensics_adapter,
    full_finetune,
    layernorm,
    linear_probe,
    lora,
    lp_ft,
    svd_residual,
)
from train.modes.registry import MODES, Adaptation, ModeOptions, TrainingMode, get_mode, mode_names, register

register(linear_probe.MODE)
register(full_finetune.MODE)
register(lp_ft.MODE)
register(layernorm.MODE)
register(lora.MODE)
register(svd_residual.MODE)
register(bitfit.MODE)
register(forensics_adapter.MODE)

__all__ = ["MODES", "Adaptation", "ModeOptions", "TrainingMode", "get_mode", "mode_names", "register"]
