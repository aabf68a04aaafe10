"""Mixed-precision training (``train.precision``): autocast of the forward pass to bf16 or fp16 on a GPU,
and for fp16 dynamic loss scaling (Micikevicius et al. 2018, "Mixed Precision Training")."""

import contextlib

import torch

from .errors import ConfigError

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # train.precision -> autocast dtype


def check(t, device: torch.device, aggressive: bool = False) -> None:
    """``train.precision`` other than fp32 needs a CUDA device (a ConfigError naming the fix otherwise);
    fp16's gradient scaler does not combine with aggressive training's inner encoder updates."""
    if t.precision == "fp32":
        return
    if device.type != "cuda":
        raise ConfigError(f"train.precision={t.precision} is for GPU training, but the device is {device}; "
                          f"use train.precision=fp32 on the CPU (or train.device=cuda on a machine with a GPU)")
    if t.precision == "fp16" and aggressive:
        raise ConfigError("train.precision=fp16 does not combine with objective.aggressive (its inner updates "
                          "bypass the gradient scaler); use train.precision=bf16")


def autocast(device: torch.device, precision: str):
    """The context a training step's forward pass runs in: torch.autocast to bf16/fp16, or nothing (fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])


def grad_scaler(enabled: bool):
    """A CUDA gradient scaler for fp16 (Micikevicius et al. 2018, dynamic loss scaling); a no-op when not enabled."""
    if hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler("cuda", enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled)  # torch < 2.3
