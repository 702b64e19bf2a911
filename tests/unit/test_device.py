"""Device and precision choice: bf16 where the hardware runs it natively, fp32 otherwise."""

from __future__ import annotations

import pytest
import torch

from complex_ner.core import device as dev

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize("native", [True, False])
def test_auto_is_bf16_only_on_native_hardware(
    monkeypatch: pytest.MonkeyPatch, native: bool
) -> None:
    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda: native)
    assert dev.pick_precision("auto", CPU) == ("bf16" if native else "fp32")
    assert dev.pick_precision("auto", CUDA) == "bf16"


def test_explicit_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda: False)
    assert dev.pick_precision("bf16", CPU) == "bf16"  # asked for: kept, even if emulated
    assert dev.pick_precision("fp16", CPU) == "fp32"  # no gradient scaler on CPU
    assert dev.pick_precision("fp16", CUDA) == "fp16"
    assert dev.pick_precision("fp32", CUDA) == "fp32"


def test_cpu_autocast_casts_matmuls_and_prediction_stays_fp32() -> None:
    layer = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    with dev.autocast_context(CPU, "bf16"):
        assert layer(x).dtype == torch.bfloat16
    with dev.autocast_context(CPU, None):
        assert layer(x).dtype == torch.float32
    with dev.autocast_context(CPU, "fp32"):
        assert layer(x).dtype == torch.float32
