"""One training loop for fine-tuning and MLM pre-training, with callbacks.

:class:`Trainer` owns what both share: per-epoch batches from the caller, the forward pass
under autocast, backward (through a GradScaler for fp16), gradient clipping, the optimizer and
scheduler steps, and the RNG. Each epoch re-seeds torch from ``(seed, epoch)`` and hands the
batch function a generator seeded the same way, so a run resumed after epoch ``k`` makes exactly
the updates an uninterrupted run makes (on CPU) as long as the caller restored the model,
optimizer and scheduler state.

Callbacks (:class:`Callback`) observe the run: ``on_train_start``, ``on_step_end`` after every
optimizer step, ``on_epoch_end`` with the epoch's record (returning True stops the loop) and
``on_train_end``. Progress lines (:class:`ProgressLogger`), a terminal bar
(:class:`TqdmProgress`) and experiment tracking (supplied by the application layer) are all
callbacks; the engines themselves import no tracking library.

Data-parallel (``world`` of several processes under torchrun): the model's gradients are
averaged by DDP inside ``loss_fn``'s backward; the trainer reports every step's loss averaged
over the ranks (each rank's loss is already weighted by its share of the batch, so the average
is the whole batch's mean) and stops every rank when any rank's epoch hook or callback asks to.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import torch
from torch import Tensor, nn

from complex_ner.core.device import autocast_context
from complex_ner.core.distributed import World, any_rank, sum_over_ranks

B = TypeVar("B")
BatchFn = Callable[[int, torch.Generator], Iterable[B]]
"""``batches(epoch, generator)``: the epoch's batches, ready on the device, in the order the
seeded ``generator`` gives."""


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch: torch's global RNG (dropout) and the batch-order generator."""
    return seed * 1000 + epoch


def eta_seconds(elapsed: float, done: int, left: int) -> float | None:
    """Seconds still to go at the rate of the ``done`` steps so far (None before the first)."""
    return elapsed / done * left if done > 0 else None


def decay_groups(module: nn.Module, lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups of ``module``: weight decay on matrices, none on biases and norms.

    Frozen parameters are left out; shared (tied) parameters appear once.
    """
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        # Biases and norm scales are not regularised (as in BERT's recipe).
        (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [
        {"params": decay, "lr": lr, "weight_decay": weight_decay},
        {"params": no_decay, "lr": lr, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


# torch's fused AdamW runs one kernel over every weight instead of a loop of small ops per
# tensor; the devices it supports (others get torch's default implementation).
_FUSED_DEVICES = frozenset({"cpu", "cuda"})


def adamw(groups: list[dict[str, Any]], *, fused: bool = True) -> torch.optim.AdamW:
    """AdamW over ``groups`` (see :func:`decay_groups`), fused where the weights' device allows.

    Args:
        groups: Parameter groups, each with its ``params``, ``lr`` and ``weight_decay``.
        fused: Use torch's fused kernel (same update rule, one pass over the weights); False:
            torch's default per-tensor implementation.
    """
    devices = {p.device.type for g in groups for p in g["params"]}
    return torch.optim.AdamW(groups, fused=(fused and devices <= _FUSED_DEVICES) or None)


def linear_schedule(
    optimizer: torch.optim.Optimizer, total: int, warmup_fraction: float, floor: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_fraction`` of ``total`` steps, then linear decay to 0.

    ``floor`` bounds the factor from below (a share of each group's peak rate).
    """
    warmup = int(total * warmup_fraction)

    def factor(step: int) -> float:
        if step < warmup:
            return max(floor, (step + 1) / warmup)
        return max(floor, 1.0 - (step - warmup) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass(frozen=True)
class TrainStart:
    """What a run is about to do (a resumed run starts after ``start_epoch`` epochs)."""

    epochs: int
    steps_per_epoch: int
    start_epoch: int = 0
    history: tuple[dict[str, Any], ...] = ()

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def start_step(self) -> int:
        return self.start_epoch * self.steps_per_epoch


@dataclass(frozen=True)
class StepInfo:
    """One finished optimizer step."""

    step: int  # global, 1-based, counting the epochs of a resumed run
    total_steps: int
    epoch: int  # 1-based
    epochs: int
    loss: float
    lr: float  # the first parameter group's rate this step used
    elapsed: float  # seconds since this call started
    eta: float | None  # seconds left at the rate of this call's steps


@dataclass
class LoopResult:
    """What :meth:`Trainer.fit` did."""

    epoch: int  # epochs completed, resumed ones included
    step: int
    history: list[dict[str, Any]] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)  # this call's steps
    finished_early: bool = False  # the engine's epoch hook ended the run (early stopping)
    interrupted: bool = False  # a callback stopped this call before the last epoch
    seconds: float = 0.0


class Callback:
    """Hooks called by :class:`Trainer`; override the ones you need."""

    def on_train_start(self, start: TrainStart) -> None:
        """Before the first step of this call."""

    def on_step_end(self, step: StepInfo) -> None:
        """After every optimizer step."""

    def on_epoch_end(self, record: dict[str, Any]) -> bool | None:
        """After an epoch, with its record; return True to stop the loop here."""
        return None

    def on_train_end(self, result: LoopResult) -> None:
        """After the loop, also when it stopped early or raised (``result`` holds what ran)."""


class Trainer(Generic[B]):
    """The shared loop (see the module docstring).

    Args:
        model: Put in train mode at the start of every epoch.
        epochs: Epochs of the whole run.
        steps_per_epoch: Batches the batch function yields per epoch (for step counts and ETA).
        seed: Seeds every epoch's RNG through :func:`epoch_seed`.
        clip_norm: Clip the gradient norm to this; 0 turns clipping off.
        clock: Seconds, for elapsed time and ETA.
        world: The data-parallel processes this one belongs to (see the module docstring).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        *,
        epochs: int,
        steps_per_epoch: int,
        seed: int,
        device: torch.device,
        precision: str = "fp32",
        clip_norm: float = 0.0,
        callbacks: Sequence[Callback] = (),
        clock: Callable[[], float] = time.perf_counter,
        world: World | None = None,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.seed = seed
        self.device = device
        self.precision = precision
        self.clip_norm = clip_norm
        self.callbacks = list(callbacks)
        self.clock = clock
        self.world = world if world is not None else World()
        self.scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")

    def step(self, loss_fn: Callable[[B], Tensor], batch: B) -> tuple[float, float]:
        """One optimizer step on ``batch``; returns the loss and the learning rate it used."""
        with autocast_context(self.device, self.precision):
            loss = loss_fn(batch)  # shape: ()
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        if self.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        lr = float(self.optimizer.param_groups[0]["lr"])
        self.scheduler.step()
        value = float(loss.detach())
        if self.world.distributed:
            value = sum_over_ranks([value], self.world, self.device)[0] / self.world.size
        return value, lr

    def fit(
        self,
        batches: BatchFn[B],
        loss_fn: Callable[[B], Tensor],
        *,
        start_epoch: int = 0,
        history: Sequence[dict[str, Any]] = (),
        epoch_end: Callable[[dict[str, Any]], bool] | None = None,
    ) -> LoopResult:
        """Train epochs ``start_epoch + 1 .. epochs``.

        Args:
            batches: The batch function (see :data:`BatchFn`).
            loss_fn: A batch's scalar loss.
            start_epoch: Epochs already done (the caller restored their state).
            history: Their records; this call's records are appended to a copy.
            epoch_end: The engine's own end of epoch, before the callbacks see the record: it may
                add fields (validation scores) and save state, and returns True when the run is
                over (early stopping). The record it gets holds ``epoch``, ``loss`` (mean over
                the epoch), ``lr`` (after the epoch's last step) and ``epoch_seconds``.
        """
        result = LoopResult(epoch=start_epoch, step=start_epoch * self.steps_per_epoch)
        result.history = list(history)
        start = TrainStart(self.epochs, self.steps_per_epoch, start_epoch, tuple(history))
        for callback in self.callbacks:
            callback.on_train_start(start)
        started = self.clock()
        try:
            self._epochs(batches, loss_fn, start, result, epoch_end, started)
        finally:
            # Also after an error, so bars close and buffered metrics reach the tracker.
            result.seconds = self.clock() - started
            for callback in self.callbacks:
                callback.on_train_end(result)
        return result

    def _epochs(
        self,
        batches: BatchFn[B],
        loss_fn: Callable[[B], Tensor],
        start: TrainStart,
        result: LoopResult,
        epoch_end: Callable[[dict[str, Any]], bool] | None,
        started: float,
    ) -> None:
        for epoch in range(start.start_epoch + 1, self.epochs + 1):
            torch.manual_seed(epoch_seed(self.seed, epoch))  # dropout
            generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
            self.model.train()
            epoch_started = self.clock()
            total = 0.0
            n_steps = 0
            for batch in batches(epoch, generator):
                loss, lr = self.step(loss_fn, batch)
                result.step += 1
                result.step_losses.append(loss)
                total += loss
                n_steps += 1
                elapsed = self.clock() - started
                info = StepInfo(
                    step=result.step,
                    total_steps=start.total_steps,
                    epoch=epoch,
                    epochs=self.epochs,
                    loss=loss,
                    lr=lr,
                    elapsed=elapsed,
                    eta=eta_seconds(
                        elapsed, len(result.step_losses), start.total_steps - result.step
                    ),
                )
                for callback in self.callbacks:
                    callback.on_step_end(info)
            record: dict[str, Any] = {
                "epoch": epoch,
                "loss": total / max(1, n_steps),
                "lr": self.optimizer.param_groups[0]["lr"],
                "epoch_seconds": self.clock() - epoch_started,
            }
            result.history.append(record)
            result.epoch = epoch
            result.finished_early = bool(epoch_end(record)) if epoch_end is not None else False
            # Every callback sees the epoch, even when an earlier one asked to stop.
            stops = [bool(callback.on_epoch_end(record)) for callback in self.callbacks]
            # Every rank must leave the loop at the same epoch, or the others wait forever.
            result.finished_early, stop = any_rank(
                [result.finished_early, any(stops)], self.world, self.device
            )
            if result.finished_early:
                return
            if stop and epoch < self.epochs:
                result.interrupted = True
                return


def format_seconds(seconds: float) -> str:
    """``3h05m``, ``3m10s`` or ``42s``."""
    s = max(0, int(round(seconds)))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class ProgressLogger(Callback):
    """Self-contained progress lines, at most one every ``every`` seconds plus one per epoch.

    ``es bert_crf epoch 1/2 step 120/188 loss 0.4312 lr 5.1e-05 val-F1 0.4123 (best)
    3m10s elapsed, ~1m40s left``. Steps count over the whole run; the loss of a step line is the
    mean since the epoch began, that of an epoch line the epoch's mean; the validation part
    appears on epoch lines whose record has ``metric``. Each line goes to ``log`` whole (by
    default printed and flushed), so a parent process can relay it line by line.

    Args:
        name: Prefix of every line (language, architecture or stage).
        log: Receives each line.
        every: Minimum seconds between two step lines.
        metric: The record field shown as validation score; higher is better.
        label: How the metric is named in the line.
        clock: Seconds (injectable for tests).
    """

    def __init__(
        self,
        name: str = "",
        log: Callable[[str], None] | None = None,
        *,
        every: float = 30.0,
        metric: str = "val_macro_f1",
        label: str = "val-F1",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.log = log if log is not None else _print_flushed
        self.every = every
        self.metric = metric
        self.label = label
        self.clock = clock
        self._started = 0.0
        self._last_line = -math.inf
        self._start_step = 0
        self._step: StepInfo | None = None
        self._epoch_loss = 0.0
        self._epoch_steps = 0
        self._best = -math.inf
        self._epochs = 0
        self._total_steps = 0

    def on_train_start(self, start: TrainStart) -> None:
        self._started = self.clock()
        self._last_line = self._started
        self._start_step = start.start_step
        self._epochs = start.epochs
        self._total_steps = start.total_steps
        scores = [float(r[self.metric]) for r in start.history if self.metric in r]
        self._best = max(scores, default=-math.inf)
        if start.start_epoch:
            self.log(
                f"{self._prefix()}resuming after epoch {start.start_epoch}/{start.epochs}"
                f" (step {start.start_step}/{start.total_steps})"
            )

    def on_step_end(self, step: StepInfo) -> None:
        if self._step is None or step.epoch != self._step.epoch:
            self._epoch_loss, self._epoch_steps = 0.0, 0
        self._step = step
        self._epoch_loss += step.loss
        self._epoch_steps += 1
        now = self.clock()
        if now - self._last_line >= self.every:
            self._last_line = now
            mean = self._epoch_loss / self._epoch_steps
            self.log(self._line(step.epoch, step.step, mean, step.lr, "", now))

    def on_epoch_end(self, record: dict[str, Any]) -> bool | None:
        now = self.clock()
        self._last_line = now
        epoch = int(record["epoch"])
        step = self._step.step if self._step is not None else self._start_step
        score = ""
        if self.metric in record:
            value = float(record[self.metric])
            best = value > self._best
            self._best = max(self._best, value)
            score = f" {self.label} {value:.4f}" + (" (best)" if best else "")
        self.log(self._line(epoch, step, float(record["loss"]), float(record["lr"]), score, now))
        return None

    def _prefix(self) -> str:
        return f"{self.name} " if self.name else ""

    def _line(self, epoch: int, step: int, loss: float, lr: float, score: str, now: float) -> str:
        elapsed = now - self._started
        eta = eta_seconds(elapsed, step - self._start_step, self._total_steps - step)
        left = f", ~{format_seconds(eta)} left" if eta is not None else ""
        return (
            f"{self._prefix()}epoch {epoch}/{self._epochs} step {step}/{self._total_steps} "
            f"loss {loss:.4f} lr {lr:.1e}{score} {format_seconds(elapsed)} elapsed{left}"
        )


def _print_flushed(line: str) -> None:
    print(line, flush=True)


class TqdmProgress(Callback):
    """A terminal progress bar over the run's steps (for interactive use)."""

    def __init__(self, desc: str = "") -> None:
        self.desc = desc
        self._bar: Any = None

    def on_train_start(self, start: TrainStart) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(
            total=start.total_steps, initial=start.start_step, desc=self.desc, leave=False
        )

    def on_step_end(self, step: StepInfo) -> None:
        self._bar.update(1)
        self._bar.set_postfix(epoch=f"{step.epoch}/{step.epochs}", loss=f"{step.loss:.3f}")

    def on_train_end(self, result: LoopResult) -> None:
        self._bar.close()


class EpochRecords(Callback):
    """Hands every epoch record to ``write`` (a tracker's per-epoch metrics).

    A resumed run's earlier records (restored from the checkpoint) are handed over at its start,
    so the run that finishes holds every epoch, as an uninterrupted run would.
    """

    def __init__(self, write: Callable[[dict[str, Any]], None]) -> None:
        self.write = write

    def on_train_start(self, start: TrainStart) -> None:
        for record in start.history:
            self.write(record)

    def on_epoch_end(self, record: dict[str, Any]) -> bool | None:
        self.write(record)
        return None


class StepMetrics(Callback):
    """Per-step ``loss`` and ``lr``, handed to ``write`` in batches of ``every`` steps.

    ``write`` gets ``[(step, {"loss": ..., "lr": ...}), ...]``: one tracker write per batch,
    since a store round trip per step would cost more than a fast step. The rest is written
    when the loop ends, also when it raised.
    """

    def __init__(
        self, write: Callable[[list[tuple[int, dict[str, float]]]], None], every: int = 200
    ) -> None:
        self.write = write
        self.every = every
        self._rows: list[tuple[int, dict[str, float]]] = []

    def on_step_end(self, step: StepInfo) -> None:
        self._rows.append((step.step, {"loss": step.loss, "lr": step.lr}))
        if len(self._rows) >= self.every:
            self._flush()

    def on_train_end(self, result: LoopResult) -> None:
        self._flush()

    def _flush(self) -> None:
        if self._rows:
            rows, self._rows = self._rows, []
            self.write(rows)


class WeightAveraging(Callback):
    """SWA or EMA of a module's trainable parameters over the steps after a share of the run.

    Library first: :class:`torch.optim.swa_utils.AveragedModel` with ``get_swa_multi_avg_fn``
    (``"swa"``: the equal-weight mean of the weights after every averaged step) or
    ``get_ema_multi_avg_fn`` (``"ema"``). It averages a view of the trainable parameters only:
    frozen ones (the 250k-row word embeddings) never change, so averaging them would cost a
    second copy and a pass per step for nothing. Buffers are not averaged and no
    ``update_bn`` pass is needed: the encoders normalise with LayerNorm, which computes its
    statistics per input and keeps no running ones (BatchNorm's running mean and variance
    would have to be recomputed for the averaged weights).

    Args:
        module: The trained model; its parameters that require grad now are averaged.
        kind: ``"swa"`` or ``"ema"``.
        start_fraction: Averaging begins after this share of the run's total steps.
        ema_decay: EMA's weight of the running average at each step.

    Raises:
        ValueError: an unknown ``kind``, or ``start_fraction`` outside [0, 1).
    """

    def __init__(
        self, module: nn.Module, kind: str, start_fraction: float = 0.5, ema_decay: float = 0.99
    ) -> None:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn, get_swa_multi_avg_fn

        if kind not in ("swa", "ema"):
            raise ValueError(f"train.average: {kind!r} is not 'swa' or 'ema'")
        if not 0.0 <= start_fraction < 1.0:
            raise ValueError(f"train.average_start: {start_fraction} is not in [0, 1)")
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        self.kind = kind
        self.start_fraction = start_fraction
        self.names = [n for n, _ in named]
        # The same Parameter objects as the module's: updating from it reads the live weights.
        self.params = nn.ParameterList([p for _, p in named])
        avg = get_ema_multi_avg_fn(ema_decay) if kind == "ema" else get_swa_multi_avg_fn()
        self.averaged = AveragedModel(self.params, multi_avg_fn=avg)
        self.start_step = 0

    @property
    def count(self) -> int:
        """Steps averaged so far."""
        return int(self.averaged.n_averaged)

    def on_train_start(self, start: TrainStart) -> None:
        self.start_step = int(start.total_steps * self.start_fraction)

    def on_step_end(self, step: StepInfo) -> None:
        if step.step > self.start_step:
            self.averaged.update_parameters(self.params)

    def averaged_state(self) -> dict[str, Tensor]:
        """The averaged tensors by the module's parameter names."""
        return dict(zip(self.names, self.averaged.module.parameters(), strict=True))

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The averaged weights in the module inside the block, the raw ones restored after.

        Raises:
            RuntimeError: nothing has been averaged yet.
        """
        if self.count == 0:
            raise RuntimeError("no weights averaged yet")
        raw = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, a in zip(self.params, self.averaged.module.parameters(), strict=True):
                p.copy_(a)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, r in zip(self.params, raw, strict=True):
                    p.copy_(r)

    def state_dict(self) -> dict[str, Tensor]:
        """The averaged weights and count, for a checkpoint."""
        return self.averaged.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore :meth:`state_dict` (a resumed run goes on averaging where it stopped)."""
        self.averaged.load_state_dict(state)


def default_callbacks(
    name: str = "",
    log: Callable[[str], None] | None = _print_flushed,
    *,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    on_steps: Callable[[list[tuple[int, dict[str, float]]]], None] | None = None,
) -> list[Callback]:
    """Progress lines to ``log`` (none when None) and the tracker's writers, in that order.

    Args:
        name: Prefix of the progress lines (``"es bert_crf"``, ``"zh pretrain"``).
        log: Receives each progress line (:class:`ProgressLogger`).
        on_epoch_end: Receives each epoch record (:class:`EpochRecords`).
        on_steps: Receives per-step loss and lr in batches (:class:`StepMetrics`).
    """
    callbacks: list[Callback] = []
    if log is not None:
        callbacks.append(ProgressLogger(name, log))
    if on_epoch_end is not None:
        callbacks.append(EpochRecords(on_epoch_end))
    if on_steps is not None:
        callbacks.append(StepMetrics(on_steps))
    return callbacks
