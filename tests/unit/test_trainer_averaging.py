"""Weight averaging as a trainer callback: SWA and EMA of the steps after the start share."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from complex_ner.engines.trainer import Callback, StepInfo, Trainer, WeightAveraging

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

Pair = tuple[Tensor, Tensor]
EPOCHS, STEPS = 3, 5  # 15 steps


class Snapshots(Callback):
    """The trainable weights after every step, by parameter name."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.after: dict[int, dict[str, Tensor]] = {}

    def on_step_end(self, step: StepInfo) -> None:
        self.after[step.step] = {
            n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad
        }


def model_with_a_frozen_bias() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.Tanh(), nn.Linear(2, 1))
    model[0].bias.requires_grad_(False)
    return model


def train(model: nn.Module, callbacks: list[Callback]) -> None:
    """A regression on fixed data, ``STEPS`` SGD steps per epoch."""
    x, y = torch.randn(10, 3), torch.randn(10, 1)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _s: 1.0)

    def batches(_epoch: int, generator: torch.Generator) -> Iterator[Pair]:
        order = torch.randperm(10, generator=generator)
        for i in range(0, 10, 2):
            yield x[order[i : i + 2]], y[order[i : i + 2]]

    def loss(batch: Pair) -> Tensor:
        return nn.functional.mse_loss(model(batch[0]), batch[1])  # shape: ()

    trainer = Trainer[Pair](
        model,
        optimizer,
        scheduler,
        epochs=EPOCHS,
        steps_per_epoch=STEPS,
        seed=1,
        device=torch.device("cpu"),
        callbacks=callbacks,
    )
    trainer.fit(batches, loss)


def run(kind: str, **kw: Any) -> tuple[nn.Module, WeightAveraging, Snapshots]:
    model = model_with_a_frozen_bias()
    averager = WeightAveraging(model, kind, start_fraction=0.4, **kw)
    snapshots = Snapshots(model)
    train(model, [averager, snapshots])
    return model, averager, snapshots


def test_swa_is_the_mean_of_the_weights_after_the_start_share() -> None:
    _, averager, snaps = run("swa")
    averaged = range(7, EPOCHS * STEPS + 1)  # after int(15 * 0.4) = 6 steps
    assert averager.count == len(averaged)
    state = averager.averaged_state()
    assert set(state) == {"0.weight", "2.weight", "2.bias"}  # the frozen bias is left out
    for name, value in state.items():
        mean = torch.stack([snaps.after[s][name] for s in averaged]).mean(0)
        assert torch.allclose(value, mean, atol=1e-6)


def test_ema_follows_the_decay_from_the_first_averaged_step() -> None:
    decay = 0.7
    _, averager, snaps = run("ema", ema_decay=decay)
    for name, value in averager.averaged_state().items():
        expected = snaps.after[7][name]
        for step in range(8, EPOCHS * STEPS + 1):
            expected = decay * expected + (1 - decay) * snaps.after[step][name]
        assert torch.allclose(value, expected, atol=1e-6)


def test_applied_swaps_the_average_in_and_restores_the_raw_weights_exactly() -> None:
    model, averager, _ = run("ema")
    raw = {n: p.detach().clone() for n, p in model.named_parameters()}
    state = averager.averaged_state()
    with averager.applied():
        inside = dict(model.named_parameters())
        for name, value in state.items():
            assert torch.equal(inside[name], value)
        assert torch.equal(inside["0.bias"], raw["0.bias"])
        assert not torch.equal(inside["2.weight"], raw["2.weight"])
    assert all(torch.equal(p, raw[n]) for n, p in model.named_parameters())


def test_state_dict_round_trip_continues_the_average() -> None:
    _, averager, _ = run("swa")
    other = WeightAveraging(model_with_a_frozen_bias(), "swa")
    other.load_state_dict(averager.state_dict())
    assert other.count == averager.count
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            other.averaged_state().values(), averager.averaged_state().values(), strict=True
        )
    )


def test_nothing_averaged_and_bad_settings_are_errors() -> None:
    model = model_with_a_frozen_bias()
    averager = WeightAveraging(model, "swa")
    with pytest.raises(RuntimeError, match="no weights averaged"), averager.applied():
        pass
    with pytest.raises(ValueError, match="train.average"):
        WeightAveraging(model, "mean")
    with pytest.raises(ValueError, match="train.average_start"):
        WeightAveraging(model, "ema", start_fraction=1.0)
