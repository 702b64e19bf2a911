"""The shared training loop: callback order and step counts, stopping, exact resume, progress."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from complex_ner.domain.encoders import load_encoder
from complex_ner.engines.trainer import (
    Callback,
    LoopResult,
    ProgressLogger,
    StepInfo,
    StepMetrics,
    TqdmProgress,
    Trainer,
    TrainStart,
    adamw,
    decay_groups,
    linear_schedule,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

CPU = torch.device("cpu")
Pair = tuple[Tensor, Tensor]


class Recorder(Callback):
    """Writes every hook call to a shared event list; optionally stops after an epoch."""

    def __init__(self, name: str, events: list[Any], stop_after: int | None = None) -> None:
        self.name = name
        self.events = events
        self.stop_after = stop_after
        self.steps: list[StepInfo] = []

    def on_train_start(self, start: TrainStart) -> None:
        self.events.append((self.name, "start", start.start_epoch, start.total_steps))

    def on_step_end(self, step: StepInfo) -> None:
        self.steps.append(step)
        self.events.append((self.name, "step", step.step))

    def on_epoch_end(self, record: dict[str, Any]) -> bool | None:
        self.events.append((self.name, "epoch", record["epoch"]))
        return self.stop_after is not None and record["epoch"] >= self.stop_after

    def on_train_end(self, result: LoopResult) -> None:
        self.events.append((self.name, "end", result.epoch, result.step))


def linear_setup(
    callbacks: list[Callback], epochs: int = 3, n: int = 10, batch: int = 2
) -> tuple[Trainer[Pair], Any]:
    """A linear regression on fixed data: ``n / batch`` steps per epoch."""
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    x, y = torch.randn(n, 3), torch.randn(n, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _s: 1.0)

    def batches(_epoch: int, generator: torch.Generator) -> Iterator[Pair]:
        order = torch.randperm(n, generator=generator)
        for i in range(0, n, batch):
            yield x[order[i : i + batch]], y[order[i : i + batch]]

    trainer = Trainer[Pair](
        model,
        optimizer,
        scheduler,
        epochs=epochs,
        steps_per_epoch=n // batch,
        seed=1,
        device=CPU,
        callbacks=callbacks,
    )
    return trainer, batches


def test_callbacks_are_called_in_order_with_global_step_counts() -> None:
    events: list[Any] = []
    first, second = Recorder("a", events), Recorder("b", events)
    trainer, batches = linear_setup([first, second], epochs=2, n=6, batch=2)
    model = trainer.model

    def loss(batch: Pair) -> Tensor:
        x, y = batch  # shape: (batch, 3), (batch, 1)
        return nn.functional.mse_loss(model(x), y)  # shape: ()

    ends: list[dict[str, Any]] = []

    def epoch_end(record: dict[str, Any]) -> bool:
        ends.append(dict(record))
        record["val"] = 1.0  # the engine's fields reach the callbacks
        return False

    result = trainer.fit(batches, loss, epoch_end=epoch_end)
    expected: list[Any] = []
    for name in "ab":
        expected.append((name, "start", 0, 6))
    for epoch in (1, 2):
        for step in range(3 * epoch - 2, 3 * epoch + 1):
            expected += [("a", "step", step), ("b", "step", step)]
        expected += [("a", "epoch", epoch), ("b", "epoch", epoch)]
    expected += [("a", "end", 2, 6), ("b", "end", 2, 6)]
    assert events == expected
    assert [(s.step, s.epoch, s.total_steps, s.epochs) for s in first.steps] == [
        (1, 1, 6, 2),
        (2, 1, 6, 2),
        (3, 1, 6, 2),
        (4, 2, 6, 2),
        (5, 2, 6, 2),
        (6, 2, 6, 2),
    ]
    assert first.steps[-1].eta == 0.0 and all(s.elapsed >= 0 for s in first.steps)
    assert [e["epoch"] for e in ends] == [1, 2]
    assert all(r["val"] == 1.0 for r in result.history)
    assert result.step == 6 and len(result.step_losses) == 6
    assert result.history[0]["loss"] == pytest.approx(sum(result.step_losses[:3]) / 3)
    assert not result.interrupted and not result.finished_early


def test_a_callback_stops_the_loop_and_the_epoch_hook_ends_the_run() -> None:
    events: list[Any] = []
    stopper, other = Recorder("stop", events, stop_after=2), Recorder("other", events)
    trainer, batches = linear_setup([stopper, other], epochs=5)
    model = trainer.model

    def loss(batch: Pair) -> Tensor:
        return nn.functional.mse_loss(model(batch[0]), batch[1])

    result = trainer.fit(batches, loss)
    assert result.interrupted and not result.finished_early
    assert result.epoch == 2 and result.step == 10
    assert ("other", "epoch", 2) in events  # every callback still sees the stopping epoch
    assert ("other", "epoch", 3) not in events
    assert events[-1] == ("other", "end", 2, 10)

    events.clear()
    trainer, batches = linear_setup([Recorder("r", events)], epochs=5)
    model = trainer.model
    result = trainer.fit(batches, loss, epoch_end=lambda record: record["epoch"] == 3)
    assert result.finished_early and not result.interrupted and result.epoch == 3


def test_end_hooks_run_when_the_loop_raises() -> None:
    events: list[Any] = []
    trainer, batches = linear_setup([Recorder("r", events)])
    calls = 0

    def failing(batch: Pair) -> Tensor:
        nonlocal calls
        calls += 1
        if calls == 4:
            raise RuntimeError("boom")
        return nn.functional.mse_loss(trainer.model(batch[0]), batch[1])

    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(batches, failing)
    assert events[-1] == ("r", "end", 0, 3)


def test_terminal_bar_follows_the_steps(capsys: pytest.CaptureFixture[str]) -> None:
    bar = TqdmProgress("es bert_crf")
    trainer, batches = linear_setup([bar], epochs=2)

    def loss(batch: Pair) -> Tensor:
        return nn.functional.mse_loss(trainer.model(batch[0]), batch[1])

    trainer.fit(batches, loss)
    err = capsys.readouterr().err
    assert "es bert_crf" in err and "10/10" in err and "epoch=2/2" in err


# --------------------------------------------------------------------------- exact resume


class TinyTagger(nn.Module):
    """A tiny random BERT with dropout and a linear head over 3 classes."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.encoder = load_encoder(str(folder), dropout=0.1)
        self.head = nn.Linear(32, 3)

    def loss(self, batch: Pair) -> Tensor:
        ids, labels = batch  # shape: (batch, pieces), (batch, pieces)
        hidden = self.encoder(input_ids=ids).last_hidden_state  # shape: (batch, pieces, 32)
        logits = self.head(hidden)  # shape: (batch, pieces, 3)
        return nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())


def bert_run(
    folder: Path,
    callbacks: list[Callback],
    state: dict[str, Any] | None = None,
    fused: bool = True,
) -> Any:
    """Train (or resume from ``state``) 3 epochs of 4 steps; returns the trainer and result."""
    torch.manual_seed(5)  # same initial head in every run
    model = TinyTagger(folder)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 2000, (8, 6), generator=gen)
    labels = torch.randint(0, 3, (8, 6), generator=gen)
    optimizer = adamw(decay_groups(model, 1e-3, 0.01), fused=fused)
    scheduler = linear_schedule(optimizer, total=12, warmup_fraction=0.25)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])

    def batches(_epoch: int, generator: torch.Generator) -> Iterator[Pair]:
        order = torch.randperm(8, generator=generator)
        for i in range(0, 8, 2):
            yield ids[order[i : i + 2]], labels[order[i : i + 2]]

    trainer = Trainer[Pair](
        model,
        optimizer,
        scheduler,
        epochs=3,
        steps_per_epoch=4,
        seed=7,
        device=CPU,
        clip_norm=1.0,
        callbacks=callbacks,
    )
    start = state["epoch"] if state else 0
    history = state["history"] if state else ()
    return trainer, trainer.fit(batches, model.loss, start_epoch=start, history=history)


def test_resume_after_an_interruption_equals_an_uninterrupted_run(tiny_bert_dir: Path) -> None:
    full_trainer, full = bert_run(tiny_bert_dir, [])
    events: list[Any] = []
    part_trainer, part = bert_run(tiny_bert_dir, [Recorder("stop", events, stop_after=1)])
    assert part.interrupted and part.epoch == 1
    state = copy.deepcopy(
        {
            "model": part_trainer.model.state_dict(),
            "optimizer": part_trainer.optimizer.state_dict(),
            "scheduler": part_trainer.scheduler.state_dict(),
            "epoch": part.epoch,
            "history": part.history,
        }
    )
    torch.rand(100)  # whatever the process drew in between must not matter
    resumed = Recorder("resumed", [])
    done_trainer, done = bert_run(tiny_bert_dir, [resumed], state)
    assert resumed.events[0] == ("resumed", "start", 1, 12)
    assert [s.step for s in resumed.steps] == list(range(5, 13))
    assert part.step_losses + done.step_losses == full.step_losses
    assert [h["loss"] for h in done.history] == [h["loss"] for h in full.history]
    a = full_trainer.model.state_dict()
    b = done_trainer.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_fused_adamw_makes_the_same_updates_as_the_default_one(tiny_bert_dir: Path) -> None:
    fused_trainer, fused = bert_run(tiny_bert_dir, [])
    plain_trainer, plain = bert_run(tiny_bert_dir, [], fused=False)
    assert all(g["fused"] for g in fused_trainer.optimizer.param_groups)
    assert not any(g["fused"] for g in plain_trainer.optimizer.param_groups)
    # One kernel instead of per-tensor ops: the same rule, rounding may differ in the last bits.
    assert fused.step_losses == pytest.approx(plain.step_losses, rel=1e-5)
    a = fused_trainer.model.state_dict()
    b = plain_trainer.model.state_dict()
    assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6) for k in a)
    torch.manual_seed(5)  # bert_run's initial weights
    start = TinyTagger(tiny_bert_dir).state_dict()
    assert sum(not torch.allclose(a[k], start[k], rtol=1e-4, atol=1e-6) for k in a) > len(a) // 2


def test_adamw_falls_back_to_the_default_kernel_off_cpu_and_cuda() -> None:
    weight = nn.Parameter(torch.zeros(3, device="meta"))
    optimizer = adamw([{"params": [weight], "lr": 1e-3, "weight_decay": 0.0}])
    assert not optimizer.param_groups[0]["fused"]


# --------------------------------------------------------------------------- progress


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def step(n: int, epoch: int = 1, loss: float = 1.0) -> StepInfo:
    return StepInfo(n, 20, epoch, 2, loss, 5.1e-5, 0.0, None)


def test_progress_lines_are_throttled_and_every_epoch_gets_one() -> None:
    clock, lines = Clock(), []
    logger = ProgressLogger("es bert_crf", lines.append, every=30.0, clock=clock)
    logger.on_train_start(TrainStart(epochs=2, steps_per_epoch=10))
    for n in range(1, 11):
        clock.now += 10.0  # a step every 10 s: a line every third step
        logger.on_step_end(step(n, loss=float(n)))
    assert len(lines) == 3
    assert lines[0] == (
        "es bert_crf epoch 1/2 step 3/20 loss 2.0000 lr 5.1e-05 30s elapsed, ~2m50s left"
    )
    clock.now += 5.0  # validation
    logger.on_epoch_end({"epoch": 1, "loss": 5.5, "lr": 5.1e-5, "val_macro_f1": 0.4123})
    assert lines[-1] == (
        "es bert_crf epoch 1/2 step 10/20 loss 5.5000 lr 5.1e-05 val-F1 0.4123 (best) "
        "1m45s elapsed, ~1m45s left"
    )
    clock.now += 10.0
    logger.on_step_end(step(11, epoch=2, loss=3.0))  # 10 s after the epoch line: quiet
    assert len(lines) == 4
    logger.on_epoch_end({"epoch": 2, "loss": 3.0, "lr": 1e-6, "val_macro_f1": 0.3})
    # Not the best; the time left is at the rate of the 11 steps so far.
    assert lines[-1].endswith("val-F1 0.3000 1m55s elapsed, ~1m34s left")
    assert all("\n" not in line for line in lines)


def test_progress_after_resume_counts_from_the_resumed_step() -> None:
    clock, lines = Clock(), []
    logger = ProgressLogger("zh pretrain", lines.append, every=0.0, clock=clock)
    history = ({"epoch": 1, "loss": 2.0, "lr": 1e-3, "val_macro_f1": 0.5},)
    logger.on_train_start(TrainStart(epochs=2, steps_per_epoch=10, start_epoch=1, history=history))
    assert lines == ["zh pretrain resuming after epoch 1/2 (step 10/20)"]
    clock.now += 20.0
    logger.on_step_end(step(12, epoch=2, loss=1.5))
    assert lines[-1].endswith("step 12/20 loss 1.5000 lr 5.1e-05 20s elapsed, ~1m20s left")
    logger.on_epoch_end({"epoch": 2, "loss": 1.4, "lr": 0.0, "val_macro_f1": 0.45})
    assert "(best)" not in lines[-1]  # the resumed run's best was 0.5


def test_step_metrics_are_written_in_batches_and_flushed_at_the_end() -> None:
    writes: list[list[tuple[int, dict[str, float]]]] = []
    metrics = StepMetrics(writes.append, every=2)
    for n in range(1, 6):
        metrics.on_step_end(step(n, loss=float(n)))
    assert [[s for s, _ in w] for w in writes] == [[1, 2], [3, 4]]
    metrics.on_train_end(LoopResult(epoch=1, step=5))
    assert writes[-1] == [(5, {"loss": 5.0, "lr": 5.1e-5})]


def test_linear_schedule_warms_up_then_decays_to_the_floor() -> None:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = linear_schedule(optimizer, total=10, warmup_fraction=0.2, floor=0.1)
    rates = []
    for _ in range(10):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[:3] == pytest.approx([0.5, 1.0, 1.0])
    assert rates == sorted(rates[:2]) + sorted(rates[2:], reverse=True)
    assert min(rates) == pytest.approx(0.125) and rates[-1] >= 0.1
