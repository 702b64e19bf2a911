"""Device and numeric precision: where tensors live and how the forward pass is cast."""

from __future__ import annotations

import contextlib
from typing import Any

import torch


def pick_device(name: str) -> torch.device:
    """``auto`` is the first CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def pick_precision(name: str, device: torch.device) -> str:
    """``auto`` is bf16 on CUDA and fp32 on CPU."""
    if name == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if name in ("bf16", "fp16") and device.type != "cuda":
        return "fp32"  # autocast is only used on CUDA
    return name


def autocast_context(device: torch.device, precision: str | None) -> Any:
    """bf16/fp16 autocast on CUDA; nothing on CPU (fp32 is faster there than emulated bf16)."""
    if device.type != "cuda" or precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast("cuda", dtype=dtype)
