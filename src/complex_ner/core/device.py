"""Device and numeric precision: where tensors live and how the forward pass is cast."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from complex_ner.core.distributed import World


def pick_device(name: str, world: World | None = None) -> torch.device:
    """``auto`` is the first CUDA device when there is one, else the CPU.

    In a distributed world each process owns one GPU, ``cuda:<LOCAL_RANK>``, for ``auto`` and
    ``cuda`` alike (torchrun hands out the devices).

    Raises:
        ValueError: a fixed ``cuda:N`` in a distributed world (every process would share it).
    """
    if world is None or not world.distributed:
        if name == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name != "cuda":
        raise ValueError(
            f"train.device: {name!r} pins one device, but {world.size} processes train: "
            "use auto or cuda (each process takes cuda:<LOCAL_RANK>)"
        )
    return torch.device("cuda", world.local_rank)


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 matrix products natively here (AVX512-BF16 or AMX)."""
    # The same capability probe PyTorch's own CPU-autocast tests use; without it bf16 is emulated
    # and slower than fp32.
    return bool(
        torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


def pick_precision(name: str, device: torch.device) -> str:
    """The training forward pass's precision.

    ``auto`` is bf16 on CUDA and on CPUs with native bf16, else fp32. fp16 is CUDA-only (no
    gradient scaler on CPU), so it becomes fp32 there; an explicit ``bf16`` is kept.
    """
    if name == "auto":
        if device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16()):
            return "bf16"
        return "fp32"
    if name == "fp16" and device.type != "cuda":
        return "fp32"
    return name


def autocast_context(device: torch.device, precision: str | None) -> Any:
    """Autocast for bf16/fp16; ``None`` means bf16 on CUDA and fp32 on CPU (prediction)."""
    if precision is None:
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp32" or device.type not in ("cuda", "cpu"):
        return contextlib.nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype)
